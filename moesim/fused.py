"""The fused CPU step: Algorithm 1's loss and gradients in one pass over the samples, in C.

``moesim.step`` computes a step with torch operations: sort the samples by routed expert, gather
them, batched matmuls, a dozen elementwise passes. On a CPU each of those passes goes through
memory. ``fused_step.c`` (next to this file) does the same arithmetic per sample instead: router
logits, noisy top-1 routing, gate, the routed expert's output, loss derivative and the sample's
gradient contributions, while the sample is in cache. It is compiled once per machine with the
system C compiler (``cc``) into a cache folder and loaded with ``ctypes``; where that is not
possible, or for a configuration it does not cover, training uses ``moesim.step`` (the eager
reference), which it is tested equal to.

Covered: CPU, float32, activation ``linear``, ``cubic`` or ``power``, with or without bias, every
gate and loss, and single nonlinear models (no router, logistic loss). A linear expert is one
inner product, f_m = <u_m, sum_p x^(p)> + P <b_m, a> with u_m = sum_j a_j w_mj, computed like the
router's logits. Gradients are summed per chunk of samples whose boundaries depend on n only, so a
result does not depend on the thread count.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import subprocess
import tempfile
import weakref
from pathlib import Path

import torch

from .config import Config, GATES, LOSSES
from .model import Params, Workspace, is_linear
from .step import StepOutput

SOURCE = Path(__file__).with_name("fused_step.c")
CFLAGS = ["-O3", "-march=native", "-fPIC", "-shared", "-pthread", "-fno-math-errno", "-ffp-contract=fast",
          "-std=gnu11"]  # -march=native: built on the machine that runs it; fp-contract: FMAs
#: Gradient partial sums per step: chunks of samples (boundaries depend on n only).
N_CHUNKS = 16
MAX_EXPERTS = 64  # as in fused_step.c
_VEC = 16  # filters are padded to a multiple of this (the kernel's register block)

_lib: ctypes.CDLL | None = None
_lib_error: str | None = None


class FusedUnavailable(RuntimeError):
    """The fused kernel cannot run here or for this configuration; the message says why."""


def cache_dir() -> Path:
    """Where compiled kernels live: ``kernels/`` in ``moesim.outputs.cache_dir()``."""
    from .outputs import cache_dir as root

    return root() / "kernels"


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


def _build() -> Path:
    cc = _compiler()
    try:
        version = subprocess.run([cc, "--version"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        raise FusedUnavailable(f"no C compiler: running {cc!r} failed ({e})") from None
    source = SOURCE.read_bytes()
    key = hashlib.sha256(source + " ".join([cc, version, platform.machine(), _cpu_id(), *CFLAGS]).encode())
    key = key.hexdigest()[:16]
    target = cache_dir() / f"fused_step-{key}.so"
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
    fn = lib.moesim_fused_step
    fn.restype = ctypes.c_int
    fn.argtypes = [ctypes.c_void_p] * 17 + [ctypes.c_int64] * 13
    fn = lib.moesim_fused_forward
    fn.restype = ctypes.c_int
    fn.argtypes = [ctypes.c_void_p] * 10 + [ctypes.c_int64] * 12
    _lib = lib
    return lib


def unsupported(cfg: Config, x: torch.Tensor) -> str | None:
    """Why the fused kernel does not cover ``cfg`` on ``x`` (None: it does)."""
    if x.device.type != "cpu":
        return f"device {x.device} (the fused kernel is CPU only)"
    if x.dtype != torch.float32:
        return f"dtype {x.dtype} (the fused kernel is float32 only)"
    if cfg.activation not in ("cubic", "power", "linear"):
        return f"activation={cfg.activation!r} (covered: linear, cubic, power)"
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
            self.q = 3 if cfg.activation == "cubic" else cfg.power
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


def _run(cfg: Config, params: Params, x, x_sum, y, noise, a, router: bool, work: Workspace | None) -> StepOutput:
    k = _Prepared(cfg, params, x, a, "step")
    S, M, d, Mp, Jp, n = k.S, k.M, k.d, k.Mp, k.Jp, k.n
    C = max(1, min(N_CHUNKS, n))
    wshape, bshape = ((S, d, Mp), (S, Mp)) if k.linear else ((S, M, d, Jp), (S, M, Jp))
    work = work if isinstance(work, Workspace) else Workspace()
    gw = work.get("gw", (C, *wshape), x)
    gb = work.get("gb", (C, *bshape), x) if k.b is not None else None
    gth = work.get("gth", (C, S, d, Mp), x) if router else None
    gw_out = x.new_empty(wshape)
    gb_out = x.new_empty(bshape) if k.b is not None else None
    gth_out = x.new_empty(S, d, Mp) if router else None
    margin, loss = x.new_empty(S, n), x.new_empty(S, n)
    expert = torch.empty(S, n, dtype=torch.long)
    x_sum = None if x_sum is None else x_sum.contiguous()  # read by the router and by linear experts
    y = y.contiguous()
    noise = noise.contiguous() if router and noise is not None else None  # NULL: no noise
    status = k.lib.moesim_fused_step(
        _ptr(k.x), _ptr(x_sum), _ptr(y), _ptr(noise), _ptr(k.theta), _ptr(k.w), _ptr(k.bias), _ptr(k.a),
        _ptr(margin), _ptr(loss), _ptr(expert), _ptr(gw), _ptr(gb), _ptr(gth), _ptr(gw_out), _ptr(gb_out),
        _ptr(gth_out), n, k.P, d, Jp, M, Mp, S, C, k.q, GATES.index(cfg.gate) if router else 0,
        LOSSES.index(cfg.loss) if router else 0, int(router), torch.get_num_threads())
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
    status = k.lib.moesim_fused_forward(
        _ptr(k.x), _ptr(x_sum), _ptr(noise), _ptr(k.theta), _ptr(k.w), _ptr(k.bias), _ptr(k.a), _ptr(f),
        _ptr(gate), _ptr(expert), n, k.P, k.d, k.Jp, M, k.Mp, S, k.q, GATES.index(cfg.gate), int(router),
        int(dense), torch.get_num_threads())
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
             noise: torch.Tensor, a: torch.Tensor, buffer: Workspace | None = None) -> StepOutput:
    """``moesim.step.moe_step`` (Algorithm 1's loss and gradients, S runs) by the fused kernel.

    Args:
        buffer: a ``Workspace`` to reuse from step to step (anything else: a fresh one).
    """
    return _run(cfg, params, x, x_sum, y, noise, a, router=True, work=buffer)


def single_step(cfg: Config, params: Params, x: torch.Tensor, y: torch.Tensor, a: torch.Tensor,
                buffer: Workspace | None = None) -> StepOutput:
    """``moesim.step.single_step`` (single CNNs, logistic loss) by the fused kernel."""
    return _run(cfg, params, x, None, y, None, a, router=False, work=buffer)
