"""The ``fused`` engine: Algorithm 1's loss and gradients in one pass over the samples, in C (CPU only).

The ``eager`` engine (``moesim.engines.eager``) computes a step with torch operations: sort the samples by routed expert, gather
them, batched matmuls, a dozen elementwise passes. On a CPU each of those passes goes through
memory. ``fused_step.c`` (next to this file) does the same arithmetic per sample instead: router
logits, noisy top-1 routing, gate, the routed expert's output, loss derivative and the sample's
gradient contributions, while the sample is in cache. It is compiled once per machine with the
system C compiler (``cc``) into a cache folder and loaded with ``ctypes``; where that is not
possible, or for a configuration it does not cover, ``unavailable`` says why and training uses
the eager engine, which it is tested equal to.

Covered: CPU, float32, the monomial activations sigma(z) = z^q of ``moesim.nonlinearities``
(``linear``, ``cubic``, ``power``), with or without bias, every
gate and loss, and single nonlinear models (no router, logistic loss). A linear expert is one
inner product, f_m = <u_m, sum_p x^(p)> + P <b_m, a> with u_m = sum_j a_j w_mj, computed like the
router's logits. Gradients are summed per chunk of samples whose boundaries depend on n only, so a
result does not depend on the thread count.

The kernel's interface is declared once here and checked against the C source: the enum values of
the gates and losses are read from ``fused_step.c``'s ``enum`` lines (``C_ENUMS``), and each exported
function's arguments are a list of (name, ctypes type) pairs (``STEP_ARGS``, ``FORWARD_ARGS``) that
``tests/test_engines.py`` compares with the C prototypes; calls pass the arguments by name.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import re
import subprocess
import tempfile
import weakref
from pathlib import Path

import torch

from .. import outputs
from ..config import Config
from ..model import Params, is_linear
from ..nonlinearities import degree, monomials
from .base import Engine, StepOutput, Workspace

SOURCE = Path(__file__).with_name("fused_step.c")
CFLAGS = ["-O3", "-march=native", "-fPIC", "-shared", "-pthread", "-fno-math-errno", "-ffp-contract=fast",
          "-std=gnu11"]  # -march=native: built on the machine that runs it; fp-contract: FMAs
#: Gradient partial sums per step: chunks of samples (boundaries depend on n only).
N_CHUNKS = 16
MAX_EXPERTS = 64  # as in fused_step.c
_VEC = 16  # filters are padded to a multiple of this (the kernel's register block)

#: C enum constant of each config value the kernel takes as an integer: ``cfg.gate`` and ``cfg.loss``.
C_NAMES = {"gate": {"softmax": "GATE_SOFTMAX", "noisy_logit": "GATE_NOISY_LOGIT", "noisy_softmax": "GATE_NOISY_SOFTMAX"},
           "loss": {"logistic": "LOSS_LOGISTIC", "double_softmax_ce": "LOSS_DOUBLE_SOFTMAX"}}


def c_enums(source: str | None = None) -> dict[str, int]:
    """The constants of the ``enum { NAME = value, ... }`` lines of ``fused_step.c``."""
    text = SOURCE.read_text() if source is None else source
    return {name: int(value) for body in re.findall(r"enum\s*\{([^}]*)\}", text)
            for name, value in re.findall(r"(\w+)\s*=\s*(\d+)", body)}


C_ENUMS = c_enums()


def c_value(field: str, value: str) -> int:
    """The kernel's integer for ``cfg.<field> = value`` (``C_NAMES`` looked up in ``C_ENUMS``)."""
    return C_ENUMS[C_NAMES[field][value]]


_P, _I = ctypes.c_void_p, ctypes.c_int64
#: Arguments of ``moesim_fused_step`` in the order of its C prototype (tested against it).
STEP_ARGS = [(k, _P) for k in ("x", "xs", "y", "noise", "theta", "w", "bias", "a", "margin", "loss", "expert",
                               "gw", "gb", "gth", "gw_out", "gb_out", "gth_out")] + \
            [(k, _I) for k in ("n", "P", "d", "Jp", "M", "Mp", "S", "C", "q", "gate", "loss_kind", "router",
                               "nthreads")]
#: Arguments of ``moesim_fused_forward`` in the order of its C prototype (tested against it).
FORWARD_ARGS = [(k, _P) for k in ("x", "xs", "noise", "theta", "w", "bias", "a", "f_out", "gate_out", "expert")] + \
               [(k, _I) for k in ("n", "P", "d", "Jp", "M", "Mp", "S", "q", "gate", "router", "dense", "nthreads")]


def _call(fn, declared: list[tuple[str, type]], **args) -> int:
    """``fn`` with ``args`` passed in the declared order (every declared argument, no other)."""
    if set(args) != {k for k, _ in declared}:
        raise TypeError(f"{fn.__name__}: arguments {sorted(set(args) ^ {k for k, _ in declared})} missing or unknown")
    return fn(*(args[k] for k, _ in declared))


_lib: ctypes.CDLL | None = None
_lib_error: str | None = None


class FusedUnavailable(RuntimeError):
    """The fused kernel cannot run here or for this configuration; the message says why."""


def _compiler() -> str:
    return os.environ.get("CC", "cc")


def _cpu_id() -> str:
    """What ``-march=native`` depends on: the CPU's model and instruction-set flags (a kernel cache
    in a home folder shared by cluster nodes of different CPUs keeps one build per kind)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or platform.machine()
    keep = [next((ln for ln in lines if ln.startswith(k)), "") for k in ("model name", "flags", "Features")]
    return "\n".join(keep)


def kernel_path(key: str) -> Path:
    """Where the kernel built with cache key ``key`` lives: ``kernels/`` in ``moesim.outputs.cache_dir()``."""
    return outputs.cache_dir("kernels") / f"fused_step-{key}.so"


def _build() -> Path:
    cc = _compiler()
    try:
        version = subprocess.run([cc, "--version"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        raise FusedUnavailable(f"no C compiler: running {cc!r} failed ({e})") from None
    source = SOURCE.read_bytes()
    key = hashlib.sha256(source + " ".join([cc, version, platform.machine(), _cpu_id(), *CFLAGS]).encode())
    key = key.hexdigest()[:16]
    target = kernel_path(key)
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        out = Path(tmp) / target.name
        proc = subprocess.run([cc, *CFLAGS, str(SOURCE), "-o", str(out), "-lm"], capture_output=True, text=True)
        if proc.returncode != 0:
            raise FusedUnavailable(f"compiling {SOURCE.name} with {cc} failed:\n{proc.stderr.strip()}")
        os.replace(out, target)  # atomic: concurrent processes (sweep workers) each see a whole file
    return target


def library() -> ctypes.CDLL:
    """The compiled kernel (built on first use); raises ``FusedUnavailable`` with the reason."""
    global _lib, _lib_error
    if _lib is not None:
        return _lib
    if _lib_error is not None:
        raise FusedUnavailable(_lib_error)
    try:
        lib = ctypes.CDLL(str(_build()))
    except (FusedUnavailable, OSError) as e:
        _lib_error = str(e)
        raise FusedUnavailable(_lib_error) from None
    for fn, declared in ((lib.moesim_fused_step, STEP_ARGS), (lib.moesim_fused_forward, FORWARD_ARGS)):
        fn.restype = ctypes.c_int
        fn.argtypes = [t for _, t in declared]
    _lib = lib
    return lib


def unsupported(cfg: Config, x: torch.Tensor) -> str | None:
    """Why the fused kernel does not cover ``cfg`` on ``x`` (None: it does)."""
    if x.device.type != "cpu":
        return f"device {x.device} (the fused kernel is CPU only)"
    if x.dtype != torch.float32:
        return f"dtype {x.dtype} (the fused kernel is float32 only)"
    if degree(cfg) is None:
        return f"activation={cfg.activation!r} (covered: {', '.join(monomials())})"
    if cfg.architecture == "moe" and cfg.loss not in C_NAMES["loss"]:
        return f"loss={cfg.loss!r} (covered: {', '.join(C_NAMES['loss'])})"
    if is_linear(cfg) and cfg.architecture == "single":
        return "a linear single model (one matrix-vector product per step: the eager step is faster)"
    if cfg.load_balancing > 0:
        return "load_balancing > 0 (uses autograd)"
    if cfg.gate == "unit" and cfg.architecture == "moe":
        return "gate='unit' (a broken model for the mutation matrix; the eager step runs it)"
    if cfg.experts > MAX_EXPERTS:
        return f"n_experts={cfg.experts} (the fused kernel takes at most {MAX_EXPERTS})"
    return None


def available(cfg: Config, x: torch.Tensor) -> str | None:
    """None when the fused kernel can run ``cfg`` here, else the reason it cannot."""
    reason = unsupported(cfg, x)
    if reason is not None:
        return reason
    try:
        library()
    except FusedUnavailable as e:
        return str(e)
    return None


_patch_minor: dict[int, tuple] = {}  # id(x) -> (weakref to x, x's version, x as (n, d, P))


def patch_minor(x: torch.Tensor) -> torch.Tensor:
    """x (n, P, d) as (n, d, P), the kernel's layout. The copies of the last few x are kept
    (training passes the same training and test x again and again)."""
    hit = _patch_minor.get(id(x))
    if hit is not None and hit[0]() is x and hit[1] == x._version:
        return hit[2]
    for key in [k for k, v in _patch_minor.items() if v[0]() is None]:  # dead tensors
        del _patch_minor[key]
    if len(_patch_minor) >= 4:
        del _patch_minor[next(iter(_patch_minor))]
    xt = x.transpose(1, 2).contiguous()
    _patch_minor[id(x)] = (weakref.ref(x), x._version, xt)
    return xt


def _ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _padded_filters(W: torch.Tensor, b: torch.Tensor | None, a: torch.Tensor):
    """(S, M, J, d) filters as (S, M, d, Jp), biases as (S, M, Jp), a as (Jp,): zero filters pad J."""
    S, M, J, d = W.shape
    Jp = -(-J // _VEC) * _VEC
    w = W.new_zeros(S, M, d, Jp)
    w[..., :J] = W.transpose(2, 3)
    bp = None
    if b is not None:
        bp = W.new_zeros(S, M, Jp)
        bp[..., :J] = b
    ap = a.new_zeros(Jp)
    ap[:J] = a
    return w, bp, ap, Jp


class _Prepared:
    """A call's inputs in the kernel's layout."""

    def __init__(self, cfg: Config, params: Params, x: torch.Tensor, a: torch.Tensor, what: str):
        reason = unsupported(cfg, x)
        if reason is not None:
            raise FusedUnavailable(f"the fused {what} does not cover {reason}")
        self.lib = library()
        W, b, theta = params.W.detach(), params.b, params.theta.detach()
        self.b = b = b.detach() if b is not None else None
        self.S, self.M, self.J, self.d = S, M, J, d = W.shape
        self.n, self.P, _ = x.shape
        self.Mp = Mp = -(-M // 8) * 8
        self.theta = theta.new_zeros(S, d, Mp)
        self.theta[..., :M] = theta
        self.linear = is_linear(cfg)
        if self.linear:  # u (S, d, Mp) and c = P <b_m, a> (S, Mp), zero-padded to Mp experts
            self.w = W.new_zeros(S, d, Mp)
            self.w[..., :M] = torch.einsum("smjd,j->sdm", W, a)
            self.bias = None
            if b is not None:
                self.bias = W.new_zeros(S, Mp)
                self.bias[:, :M] = self.P * (b @ a)
            self.a, self.Jp, self.q = a.new_zeros(_VEC), _VEC, 1
            self.x = x[:, 0]  # not read
        else:
            self.w, self.bias, self.a, self.Jp = _padded_filters(W, b, a)
            self.q = degree(cfg)
            self.x = patch_minor(x)

    def expert_grads(self, gw_out: torch.Tensor, gb_out: torch.Tensor | None, a: torch.Tensor) -> list[torch.Tensor]:
        """The kernel's expert-gradient sums as gradients of W (S, M, J, d) and b (S, M, J)."""
        M, J = self.M, self.J
        if self.linear:  # dL/dw_mj = a_j dL/du_m, dL/db_mj = P a_j dL/dc_m
            grads = [(a[:, None] * gw_out[..., :M].transpose(1, 2)[:, :, None, :]).contiguous()]
            if gb_out is not None:
                grads.append(self.P * gb_out[:, :M, None] * a)
            return grads
        grads = [gw_out[..., :J].transpose(2, 3).contiguous()]
        if gb_out is not None:
            grads.append(gb_out[..., :J].contiguous())
        return grads


def _run(cfg: Config, params: Params, x, x_sum, y, noise, a, router: bool, workspace: Workspace | None) -> StepOutput:
    k = _Prepared(cfg, params, x, a, "step")
    S, M, d, Mp, Jp, n = k.S, k.M, k.d, k.Mp, k.Jp, k.n
    C = max(1, min(N_CHUNKS, n))
    wshape, bshape = ((S, d, Mp), (S, Mp)) if k.linear else ((S, M, d, Jp), (S, M, Jp))
    workspace = workspace if isinstance(workspace, Workspace) else Workspace()
    gw = workspace.get("gw", (C, *wshape), x)
    gb = workspace.get("gb", (C, *bshape), x) if k.b is not None else None
    gth = workspace.get("gth", (C, S, d, Mp), x) if router else None
    gw_out = x.new_empty(wshape)
    gb_out = x.new_empty(bshape) if k.b is not None else None
    gth_out = x.new_empty(S, d, Mp) if router else None
    margin, loss = x.new_empty(S, n), x.new_empty(S, n)
    expert = torch.empty(S, n, dtype=torch.long)
    x_sum = None if x_sum is None else x_sum.contiguous()  # read by the router and by linear experts
    y = y.contiguous()
    noise = noise.contiguous() if router and noise is not None else None  # NULL: no noise
    status = _call(
        k.lib.moesim_fused_step, STEP_ARGS, x=_ptr(k.x), xs=_ptr(x_sum), y=_ptr(y), noise=_ptr(noise),
        theta=_ptr(k.theta), w=_ptr(k.w), bias=_ptr(k.bias), a=_ptr(k.a), margin=_ptr(margin), loss=_ptr(loss),
        expert=_ptr(expert), gw=_ptr(gw), gb=_ptr(gb), gth=_ptr(gth), gw_out=_ptr(gw_out), gb_out=_ptr(gb_out),
        gth_out=_ptr(gth_out), n=n, P=k.P, d=d, Jp=Jp, M=M, Mp=Mp, S=S, C=C, q=k.q,
        gate=c_value("gate", cfg.gate) if router else 0, loss_kind=c_value("loss", cfg.loss) if router else 0,
        router=int(router), nthreads=torch.get_num_threads())
    if status != 0:
        raise MemoryError("the fused step could not allocate its per-thread scratch memory")
    grads = k.expert_grads(gw_out, gb_out, a)
    grads.append(gth_out[..., :M].contiguous() if router else torch.zeros_like(params.theta))
    return StepOutput(loss.mean(1), margin, expert, grads)


def _forward(cfg: Config, params: Params, x, x_sum, noise, a, router: bool, dense: bool):
    k = _Prepared(cfg, params, x, a, "forward pass")
    S, M, n = k.S, k.M, k.n
    f = x.new_empty(S, M, n) if dense else x.new_empty(S, n)
    gate = None if dense else x.new_empty(S, n)
    expert = None if dense else torch.empty(S, n, dtype=torch.long)
    x_sum = None if x_sum is None else x_sum.contiguous()
    noise = None if noise is None else noise.contiguous()
    status = _call(
        k.lib.moesim_fused_forward, FORWARD_ARGS, x=_ptr(k.x), xs=_ptr(x_sum), noise=_ptr(noise),
        theta=_ptr(k.theta), w=_ptr(k.w), bias=_ptr(k.bias), a=_ptr(k.a), f_out=_ptr(f), gate_out=_ptr(gate),
        expert=_ptr(expert), n=n, P=k.P, d=k.d, Jp=k.Jp, M=M, Mp=k.Mp, S=S, q=k.q,
        gate=c_value("gate", cfg.gate) if router else 0, router=int(router), dense=int(dense),
        nthreads=torch.get_num_threads())
    if status != 0:
        raise MemoryError("the fused forward pass could not allocate its per-thread scratch memory")
    return f, gate, expert


def routed_outputs(cfg: Config, params: Params, x: torch.Tensor, x_sum: torch.Tensor, noise: torch.Tensor | None,
                   a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The MoE layer's forward pass by the fused kernel: (f of the routed expert, gate, expert),
    each (S, n); routing by the clean logits plus ``noise`` (or none), as in training."""
    return _forward(cfg, params, x, x_sum, noise, a, router=True, dense=False)


def expert_outputs(cfg: Config, params: Params, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """f_m(x_i) for every run, expert and sample, (S, M, n): ``moesim.model.expert_outputs_dense``
    by the fused kernel."""
    return _forward(cfg, params, x, x.sum(1) if is_linear(cfg) else None, None, a, router=False, dense=True)[0]


def moe_step(cfg: Config, params: Params, x: torch.Tensor, x_sum: torch.Tensor, y: torch.Tensor,
             noise: torch.Tensor, a: torch.Tensor, workspace: Workspace | None = None) -> StepOutput:
    """``moesim.engines.eager.moe_step`` (Algorithm 1's loss and gradients, S runs) by the fused kernel.

    Args:
        workspace: a ``Workspace`` to reuse from step to step (anything else: a fresh one).
    """
    return _run(cfg, params, x, x_sum, y, noise, a, router=True, workspace=workspace)


def single_step(cfg: Config, params: Params, x: torch.Tensor, y: torch.Tensor, a: torch.Tensor,
                workspace: Workspace | None = None) -> StepOutput:
    """``moesim.engines.eager.single_step`` (single CNNs, logistic loss) by the fused kernel."""
    return _run(cfg, params, x, None, y, None, a, router=False, workspace=workspace)


class FusedEngine(Engine):
    """The C kernel: CPU, float32, monomial activations (``unsupported``), a C compiler (``library``).

    Its forward passes fall back to the torch reference where the kernel cannot run (so
    ``evaluate(engine="fused")`` works anywhere); its steps raise ``FusedUnavailable`` there.
    """

    name = "fused"

    unavailable = staticmethod(available)
    refusal_format = "engine='fused' cannot run here: {reason}; use engine='eager' or 'auto'"

    def step_bytes_per_sample(self, cfg: Config) -> int:
        return 0  # a sample's activations stay in registers

    moe_step = staticmethod(moe_step)
    single_step = staticmethod(single_step)

    def routed_outputs(self, cfg, params, x, x_sum, noise, a):
        if available(cfg, x) is not None:
            return super().routed_outputs(cfg, params, x, x_sum, noise, a)
        return routed_outputs(cfg, params, x, x_sum, noise, a)

    def expert_outputs(self, cfg, params, x, a):
        if available(cfg, x) is not None:
            return super().expert_outputs(cfg, params, x, a)
        return expert_outputs(cfg, params, x, a)

    def chunk_rows(self, cfg, x, values_per_row, chunk_elements):
        if available(cfg, x) is not None:
            return super().chunk_rows(cfg, x, values_per_row, chunk_elements)
        return max(1, x.shape[0])  # one pass: the kernel keeps no large temporaries


ENGINE = FusedEngine()
