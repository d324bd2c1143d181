"""The torch API that ``inference/`` may use: names present in torch 2.7.1, Cog's CUDA 11.8 torch.

Why a list: PyTorch's CUDA 11.8 wheels end at 2.7.1, so the Replicate image runs an older torch
than local tests (2.13). A name added to torch later would pass every local test and fail only
on Replicate, so ``torch_compat.check`` allows exactly the names recorded here.

Provenance: each name below is documented in the PyTorch 2.7 reference
(https://docs.pytorch.org/docs/2.7/, pages torch, cuda, backends, nn, nn.functional, mps,
compiler, random, utils) and, except where a version is noted, already existed in torch 2.0; none
was added after 2.7.1. A test also resolves every name against the installed torch, which catches
typos here. To add a name, confirm it in the 2.7 reference (or torch's source at tag v2.7.1)
first; a name that only exists later must stay out, or be used behind a guard marked with
``# torch-compat: guarded`` on its line.
"""

from __future__ import annotations

#: The torch release this list describes; the check compares it with requirements-cog.txt.
TORCH_VERSION = "2.7.1"

_TOP_LEVEL = """
Tensor Generator device dtype Size finfo iinfo
no_grad enable_grad set_grad_enabled is_grad_enabled inference_mode autocast
manual_seed seed initial_seed compile use_deterministic_algorithms
set_float32_matmul_precision get_float32_matmul_precision set_num_threads get_num_threads
get_default_dtype set_default_dtype is_tensor is_floating_point numel save load
channels_last contiguous_format preserve_format
from_numpy tensor as_tensor zeros zeros_like ones ones_like empty empty_like full full_like
arange linspace rand rand_like randn randn_like randint randperm normal
cat concat stack split chunk index_select bitwise_and where clamp clip floor ceil round abs
sqrt rsqrt
exp log sin cos sigmoid tanh lerp mean sum std var max min maximum minimum allclose equal
isfinite isnan
float32 float16 bfloat16 float64 float half double int8 int16 int32 int64 long int uint8 bool
complex64 float8_e4m3fn float8_e5m2
__version__
"""
# float8_e4m3fn and float8_e5m2: added in 2.1. compile: 2.0.

_SUBMODULES = """
version.cuda version.__version__
cuda.is_available cuda.device_count cuda.current_device cuda.set_device cuda.get_device_name
cuda.get_device_properties cuda.get_device_capability cuda.is_bf16_supported cuda.empty_cache
cuda.synchronize cuda.memory_allocated cuda.max_memory_allocated cuda.memory_reserved
cuda.reset_peak_memory_stats cuda.mem_get_info cuda.OutOfMemoryError cuda.manual_seed
cuda.manual_seed_all cuda.Event cuda.Stream cuda.current_stream
backends.mps.is_available backends.mps.is_built
backends.cuda.matmul.allow_tf32
backends.cudnn.allow_tf32 backends.cudnn.benchmark backends.cudnn.deterministic
backends.cudnn.is_available
mps.empty_cache mps.synchronize mps.manual_seed
nn.Module nn.Parameter nn.Linear nn.Conv2d nn.Sequential nn.ModuleList nn.Identity
nn.functional.interpolate nn.functional.pad nn.functional.silu nn.functional.gelu
nn.functional.softmax nn.functional.scaled_dot_product_attention nn.functional.conv2d
nn.functional.linear nn.functional.normalize
random.manual_seed random.fork_rng
compiler.reset compiler.disable
utils.flop_counter.FlopCounterMode
"""
# compiler.reset, compiler.disable, utils.flop_counter.FlopCounterMode: added in 2.1.
# nn.functional.scaled_dot_product_attention: 2.0.

#: Every dotted name (``torch.x.y``) that inference/ may use. Modules on the way to a name
#: (``torch.cuda``, ``torch.nn.functional``) are implied.
ALLOWED: frozenset[str] = frozenset(f"torch.{name}" for name in (_TOP_LEVEL + _SUBMODULES).split())


def implied_modules(names: frozenset[str] = ALLOWED) -> frozenset[str]:
    """The module prefixes of ``names`` (torch.cuda for torch.cuda.is_available, ...)."""
    prefixes = set()
    for name in names:
        parts = name.split(".")
        prefixes.update(".".join(parts[:i]) for i in range(1, len(parts)))
    return frozenset(prefixes)
