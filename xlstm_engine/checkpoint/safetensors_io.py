"""Reading and writing safetensors weights: one file or shards with an index, written atomically.

Reading uses the safetensors library. Writing streams one tensor at a time (the format is an 8-byte header
length, a JSON header and the raw bytes), which needs neither a copy of a whole shard nor NumPy, which
`safetensors.torch.save_file` imports.
"""

import ctypes
import json
import os
import re
import struct
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from safetensors import safe_open

from .errors import CheckpointError

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
SHARD_PATTERN = re.compile(r"model-\d{5}-of-\d{5}\.safetensors")
NXAI_PATTERN = re.compile(r"model_(\d+)\.safetensors")
_DTYPES = {"F64": torch.float64, "F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}
_DTYPE_NAMES = {**{dtype: name for name, dtype in _DTYPES.items()}, torch.int64: "I64", torch.int32: "I32",
                torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8", torch.bool: "BOOL"}
_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}


def weight_files(folder: Path) -> list[Path]:
    """The safetensors files of a checkpoint folder, in reading order."""
    index = folder / INDEX_FILE
    if index.exists():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
            raise CheckpointError(f"{index}: not a valid safetensors index ({e!r})") from e
        files = [folder / name for name in dict.fromkeys(weight_map.values())]
        for file in files:
            if not file.exists():
                raise CheckpointError(f"{index} names the shard {file.name}, which does not exist in {folder}")
        return files
    if (folder / SINGLE_FILE).exists():
        return [folder / SINGLE_FILE]
    nxai = sorted((int(m[1]), folder / m[0]) for p in folder.iterdir() if (m := NXAI_PATTERN.fullmatch(p.name)))
    if nxai:
        return [file for _, file in nxai]
    raise CheckpointError(f"{folder}: no weights found; expected {SINGLE_FILE}, or {INDEX_FILE} with its shards, "
                          "or model_0.safetensors (NX-AI)")


def _open(file: Path):
    try:
        return safe_open(str(file), framework="pt", device="cpu")
    except Exception as e:  # safetensors raises its own error types for truncated or corrupted files
        raise CheckpointError(f"{file}: not a readable safetensors file ({e})") from e


def stored_dtype(file: Path) -> torch.dtype:
    """The dtype of the first floating-point tensor in `file`."""
    with _open(file) as f:
        for key in f.keys():
            dtype = f.get_slice(key).get_dtype()
            if dtype in _DTYPES:
                return _DTYPES[dtype]
    raise CheckpointError(f"{file}: holds no floating-point tensor")


def iter_tensors(files: list[Path]) -> Iterator[tuple[str, torch.Tensor, Path]]:
    """(key, tensor, file) for every tensor, one tensor in memory at a time."""
    for file in files:
        with _open(file) as f:
            for key in f.keys():
                try:
                    tensor = f.get_tensor(key)
                except Exception as e:
                    raise CheckpointError(f"{file}: cannot read tensor {key!r} ({e})") from e
                yield key, tensor, file


def parse_size(size: int | str) -> int:
    """Bytes from an int or a string like "5GB", "500MB", "2GiB"."""
    if isinstance(size, int):
        number, unit = size, ""
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", size)
        if not match or match[2].upper() not in _UNITS:
            raise ValueError(f"max_shard_size must be bytes or a size like '5GB', got {size!r}")
        number, unit = float(match[1]), match[2].upper()
    if number <= 0:
        raise ValueError(f"max_shard_size must be positive, got {size!r}")
    return int(number * _UNITS[unit])


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Write to a temporary file beside `path`, then rename it: a reader never sees a partial file."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_safetensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Write one safetensors file, copying one tensor at a time to the CPU."""
    if sys.byteorder != "little":
        raise RuntimeError("safetensors files are little-endian; writing them on a big-endian host is unsupported")
    header, offset = {}, 0
    for key, tensor in tensors.items():
        if tensor.dtype not in _DTYPE_NAMES:
            raise TypeError(f"cannot store {key!r} of dtype {tensor.dtype} in safetensors")
        nbytes = tensor.numel() * tensor.element_size()
        header[key] = {"dtype": _DTYPE_NAMES[tensor.dtype], "shape": list(tensor.shape),
                       "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    header["__metadata__"] = metadata
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # the data starts 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)) + blob)
        for tensor in tensors.values():
            tensor = tensor.detach().to("cpu").contiguous()
            if tensor.numel():
                f.write((ctypes.c_char * (tensor.numel() * tensor.element_size())).from_address(tensor.data_ptr()))


def save_tensors(tensors: dict[str, torch.Tensor], folder: Path, max_shard_size: int | str) -> list[str]:
    """Write `tensors` as model.safetensors, or as shards plus an index when larger than max_shard_size.

    Weight files of an earlier save that the new one does not use are removed afterwards. Returns the names
    of the files written.
    """
    limit = parse_size(max_shard_size)
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for key, tensor in tensors.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > limit:
            shards.append({})
            size = 0
        shards[-1][key] = tensor
        size += nbytes
    n = len(shards)
    names = [SINGLE_FILE] if n == 1 else [f"model-{k + 1:05d}-of-{n:05d}.safetensors" for k in range(n)]
    for name, shard in zip(names, shards, strict=True):
        atomic_write(folder / name, lambda tmp, shard=shard: write_safetensors(tmp, shard, {"format": "pt"}))
    if n > 1:
        index = {"metadata": {"total_size": sum(t.numel() * t.element_size() for t in tensors.values())},
                 "weight_map": {key: name for name, shard in zip(names, shards, strict=True) for key in shard}}
        atomic_write(folder / INDEX_FILE, lambda tmp: tmp.write_text(json.dumps(index, indent=2) + "\n"))
        names.append(INDEX_FILE)
    for path in folder.iterdir():
        stale = path.name in (SINGLE_FILE, INDEX_FILE) or SHARD_PATTERN.fullmatch(path.name)
        if stale and path.name not in names:
            path.unlink()
    return names
