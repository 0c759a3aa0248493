"""Extract the program and the printed outputs of an official demo notebook into moesim/replay_data.

The official repository (github.com/uclaml/MoE) runs its MoE experiments in Jupyter notebooks
(``synthetic_demo_s1.ipynb`` ... ``s4``) and stores their printed outputs. This script reads one
notebook's JSON and writes ``moesim/replay_data/<notebook>.json``:

* the program: the seed of cell 0, the setting of the data files, and for every cell that draws
  from torch's generator, what it builds (single CNN or MoE, channels, activation), how many runs
  it loops over, its epoch budget, whether it runs a forward pass before training, and which
  evaluation passes follow training, in order;
* what the notebook printed for each MoE cell (routing counts, loss lines, accuracies, the
  summary statistics), as reference data cited by notebook and cell.

Usage (the command that produced the stored files):

    for s in s1 s2 s3 s4; do
      git -C <uclaml/MoE clone> show HEAD:synthetic_demo_$s.ipynb > /tmp/synthetic_demo_$s.ipynb
      python benchmarks/extract_notebook_runs.py /tmp/synthetic_demo_$s.ipynb --commit <HEAD sha>
    done
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "moesim" / "replay_data"


def _numbers(text: str) -> list[float]:
    return [float(v) for v in re.split(r"[,\s]+", text.strip()) if v]


def _tensors(text: str) -> list[list[float]]:
    return [_numbers(m) for m in re.findall(r"tensor\(\[(.*?)\]", text, flags=re.S)]


def _accuracies(text: str) -> list[float]:
    return [float(v) for v in re.findall(r"Accuracy of the network on the \d+ test images: ([\d.]+) %", text)]


def _printed_showcase(text: str, evals: list[str], verbose: bool) -> dict:
    before, after = text.split("Finished Training", 1)
    t_before, t_after = _tensors(before), _tensors(after)
    out = dict(initial_counts=[int(v) for v in t_before[0]] if t_before else None,
               final_counts=[int(v) for v in t_after[0]],
               accuracy=dict(zip(evals, _accuracies(after))),
               cluster_counts=[[int(v) for v in t] for t in t_after[1:]])
    if verbose:
        out["losses"] = [[int(e), float(v)] for e, v in re.findall(r"Epoch (\d+) --- loss: ([\d.]+)", before)]
    return out


def _printed_loop(text: str) -> dict:
    stats = re.findall(r"(Average test accuracy|Standard deviation|Average dispatch entropy):? ([\d.]+?)\.?\n",
                       text + "\n")
    values = [float(v) for _, v in stats]
    return dict(test_accuracy=_accuracies(text), mean_accuracy=values[0], std_accuracy=values[1],
                mean_entropy=values[2], std_entropy=values[3])


def extract(nb: dict) -> dict:
    """The notebook's program and printed outputs (see the module docstring)."""
    cells = nb["cells"]
    src = ["".join(c["source"]) if c["cell_type"] == "code" else "" for c in cells]
    seed = int(re.search(r"torch\.manual_seed\((\d+)\)", src[0]).group(1))
    setting = re.search(r"synthetic_data_(s\d)/train_data\.pt", "".join(src)).group(1)
    names = r"^(DATA_NUM|EXPERT_NUM|CLUSTER_NUM|PATCH_NUM|PATCH_LEN) = (\d+)"
    consts = {k: int(v) for s in src for k, v in re.findall(names, s, re.M)}
    program, num_epochs = [], None
    for i, s in enumerate(src):
        for m in re.finditer(r"^\s*num_epochs = (\d+)", s, re.M):
            num_epochs = int(m.group(1))  # a cell's own value holds from where it is set on
        text = "".join("".join(o.get("text", "")) for o in cells[i].get("outputs", []))
        single = re.search(r"= ConvNet\(\d+, (\d+), PATCH_NUM, small=False", s)
        moe = re.search(r"= MoE\(\d+, (\d+), PATCH_NUM, EXPERT_NUM, strategy='top1', nonlinear=(True|False)", s)
        if single:
            program.append(dict(cell=i, model="single", out_channels=2 * int(single.group(1))))
        elif moe:
            loop = re.search(r"for i in range\((\d+)\)", s)
            evals = re.findall(r"\btest\(\w+, criterion, (training|test)_data", s)
            evals = ["train" if e == "training" else "test" for e in evals]
            verbose = "verbose=False" not in s
            if "noise=False" in s or "load_balancing=True" in s or "early_stopping=False" in s:
                raise ValueError(f"cell {i}: a switch this extractor does not know")
            runs = int(loop.group(1)) if loop else 1
            entry = dict(cell=i, model="moe", out_channels=2 * int(moe.group(1)),
                         activation="cubic" if moe.group(2) == "True" else "linear",
                         runs=runs, epochs=num_epochs,
                         pre_forward=bool(re.search(r"_, s, _ = \w+\(training_data\)", s)),
                         evals=evals, verbose=verbose)
            entry["printed"] = _printed_showcase(text, evals, verbose) if runs == 1 else _printed_loop(text)
            program.append(entry)
    return dict(seed=seed, setting=setting, data_num=consts["DATA_NUM"], experts=consts["EXPERT_NUM"],
                patch_len=consts["PATCH_LEN"], cells=program)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("notebook", type=Path)
    ap.add_argument("--commit", required=True, help="the uclaml/MoE commit the notebook was read from")
    args = ap.parse_args()
    nb = json.loads(args.notebook.read_text())
    out = dict(source=dict(repository="github.com/uclaml/MoE", commit=args.commit, notebook=args.notebook.name),
               **extract(nb))
    OUT.mkdir(exist_ok=True)
    path = OUT / (args.notebook.stem + ".json")
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
