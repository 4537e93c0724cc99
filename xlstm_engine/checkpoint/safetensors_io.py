"""Reading and writing safetensors weights: one file or shards with an index, and whole checkpoint saves.

Reading uses the safetensors library. Writing streams one tensor at a time (the format is an 8-byte header
length, a JSON header and the raw bytes), which needs neither a copy of a whole shard nor NumPy, which
`safetensors.torch.save_file` imports.

A checkpoint save (`save_checkpoint`) is all or nothing for readers: every file it writes carries one random
save id (safetensors `__metadata__`, the index's "metadata", a config.json key). All files are written as
temporaries first, then renamed into place with config.json last; `check_save_ids` turns a folder left between
two renames by a failure or a kill into a CheckpointError instead of a mix of two models.
"""

import ctypes
import json
import os
import re
import secrets
import struct
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from .errors import CheckpointError

CONFIG_FILE = "config.json"
SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
SHARD_PATTERN = re.compile(r"model-\d{5}-of-\d{5}\.safetensors")
NXAI_PATTERN = re.compile(r"model_(\d+)\.safetensors")
TEMP_PATTERN = re.compile(r"\.(.+)\.tmp-(\d+)")  # `.{name}.tmp-{pid}`, as atomic_write names its temporaries
SAVE_ID_KEY = "xlstm_engine_save"  # in config.json, the index's "metadata" and every weight file's __metadata__
_DTYPES = {"F64": torch.float64, "F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}
_DTYPE_NAMES = {**{dtype: name for name, dtype in _DTYPES.items()}, torch.int64: "I64", torch.int32: "I32",
                torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8", torch.bool: "BOOL"}
_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}


def weight_files(folder: Path) -> tuple[list[Path], dict[str, Any] | None]:
    """The safetensors files of a checkpoint folder in reading order, and the parsed index if they come from one.

    model.safetensors wins over model.safetensors.index.json when both are there, as in transformers 5.x
    (`_get_resolved_checkpoint_files`), so that both libraries load the same weights from any folder.
    """
    single, index_path = folder / SINGLE_FILE, folder / INDEX_FILE
    if single.exists():
        if index_path.exists():
            warnings.warn(f"{folder} holds both {SINGLE_FILE} and {INDEX_FILE}; loading {SINGLE_FILE} and ignoring "
                          "the index and its shards (as transformers does). Delete the one that is stale.",
                          stacklevel=3)
        return [single], None
    if index_path.exists():
        try:
            index = json.loads(index_path.read_text())
            weight_map = index["weight_map"]
            files = [folder / name for name in dict.fromkeys(weight_map.values())]
        except (OSError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
            raise CheckpointError(f"{index_path}: not a valid safetensors index ({e!r})") from e
        for file in files:
            if not file.exists():
                raise CheckpointError(f"{index_path} names the shard {file.name}, which does not exist in {folder}")
        return files, index
    nxai = sorted((int(m[1]), folder / m[0]) for p in folder.iterdir() if (m := NXAI_PATTERN.fullmatch(p.name)))
    if nxai:
        return [file for _, file in nxai], None
    raise CheckpointError(f"{folder}: no weights found; expected {SINGLE_FILE}, or {INDEX_FILE} with its shards, "
                          "or model_0.safetensors (NX-AI)")


def check_save_ids(folder: Path, files: list[Path], index: dict[str, Any] | None, config: dict[str, Any],
                   config_name: str = CONFIG_FILE) -> None:
    """Raise CheckpointError unless the weight files, the index and the config come from one save.

    Only folders whose weight files carry a save id (written here) are checked: transformers and others write
    none, and transformers keeps our stale id in the config.json of a folder it re-saves.
    """
    ids = {}
    for file in files:
        with _open(file) as f:
            ids[file.name] = (f.metadata() or {}).get(SAVE_ID_KEY)
    if all(save is None for save in ids.values()):
        return
    if index is not None:
        metadata = index.get("metadata")
        ids[INDEX_FILE] = metadata.get(SAVE_ID_KEY) if isinstance(metadata, dict) else None
    ids[config_name] = config.get(SAVE_ID_KEY)
    if len(set(ids.values())) == 1:
        return
    by_save: dict[Any, list[str]] = {}
    for name, save in ids.items():
        by_save.setdefault(save, []).append(name)
    parts = []
    for save, names in by_save.items():
        shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        parts.append(f"{shown} {'from save ' + save if save else 'without a save id'}")
    raise CheckpointError(f"{folder}: inconsistent checkpoint, its files come from different saves "
                          f"({'; '.join(parts)}): a save into this folder was interrupted. Save the model into this "
                          "folder again.")


def check_first_save(folder: Path) -> None:
    """For a folder without config.json: raise CheckpointError if it holds weight files of a save, whose config.json
    was never written (the first save into the folder was interrupted) or was removed."""
    ours = []
    for file in sorted(p for p in folder.iterdir() if p.name == SINGLE_FILE or SHARD_PATTERN.fullmatch(p.name)):
        with _open(file) as f:
            if SAVE_ID_KEY in (f.metadata() or {}):
                ours.append(file.name)
    if ours:
        shown = ", ".join(ours[:3]) + (f" and {len(ours) - 3} more" if len(ours) > 3 else "")
        raise CheckpointError(f"{folder}: inconsistent checkpoint, no config.json beside the weight files {shown} of "
                              "save_pretrained: a save into this folder was interrupted (or config.json was removed). "
                              "Save the model into this folder again.")


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
    """Write to a temporary `.{name}.tmp-{pid}` beside `path`, sync it and rename it: a reader never sees a partial
    file. Temporaries of the same name left by dead processes (a kill) are removed first."""
    remove_dead_temporaries(path.parent, lambda name: name == path.name)
    tmp = temp_path(path)
    try:
        _write(tmp, write)
        os.replace(tmp, path)
        _sync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def temp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def remove_dead_temporaries(folder: Path, wanted: Callable[[str], bool]) -> None:
    """Remove `.{name}.tmp-{pid}` files whose process is gone, for the names `wanted` accepts."""
    for path in folder.iterdir():
        match = TEMP_PATTERN.fullmatch(path.name)
        if match and wanted(match[1]) and not _alive(int(match[2])):
            path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    """Whether process `pid` may still be writing; when in doubt, yes."""
    if pid == os.getpid() or os.name != "posix":  # on Windows, os.kill(pid, 0) would terminate the process
        return True
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):  # another user's process, or no valid pid
        return True
    return True


def _write(tmp: Path, write: Callable[[Path], None]) -> None:
    """`write(tmp)`, then flush it to the disk, so that the rename that follows never exposes an empty file."""
    write(tmp)
    fd = os.open(tmp, os.O_RDWR)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sync_dir(folder: Path) -> None:
    """Make the renames and removals in `folder` durable (POSIX; elsewhere a no-op)."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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


def save_checkpoint(folder: Path, tensors: dict[str, torch.Tensor], config: dict[str, Any],
                    max_shard_size: int | str) -> list[str]:
    """Write config.json and `tensors` (model.safetensors, or shards plus an index when larger than
    max_shard_size) into `folder`, replacing an earlier checkpoint there. Returns the names of the files written.

    Whenever it stops (an error, a kill, a power loss), the folder loads the old checkpoint exactly, the new one
    exactly, or fails with a CheckpointError that calls it inconsistent:
    1. every file is written as a synced temporary: a failure here (a full disk) leaves the folder untouched;
    2. the weight files and the index are renamed into place, and a model.safetensors that a sharded save
       replaces is removed, which only turns the folder inconsistent (check_save_ids) until
    3. config.json is renamed into place: the new checkpoint is complete;
    4. weight files of the old checkpoint that the new one does not use are removed.
    """
    limit = parse_size(max_shard_size)
    remove_dead_temporaries(folder, _is_checkpoint_file)
    save_id = secrets.token_hex(8)
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
    writers = {name: (lambda tmp, shard=shard: write_safetensors(tmp, shard, {"format": "pt", SAVE_ID_KEY: save_id}))
               for name, shard in zip(names, shards, strict=True)}
    if n > 1:
        index = {"metadata": {"total_size": sum(t.numel() * t.element_size() for t in tensors.values()),
                              SAVE_ID_KEY: save_id},
                 "weight_map": {key: name for name, shard in zip(names, shards, strict=True) for key in shard}}
        writers[INDEX_FILE] = lambda tmp: _write_json(tmp, index)
    writers[CONFIG_FILE] = lambda tmp: _write_json(tmp, {**config, SAVE_ID_KEY: save_id})

    pending = {name: temp_path(folder / name) for name in writers}  # temporaries not renamed yet
    try:
        for name, write in writers.items():  # 1.
            _write(pending[name], write)
        for name in writers:  # 2. (the index after its shards)
            if name != CONFIG_FILE:
                os.replace(pending[name], folder / name)
                del pending[name]
        if n > 1:
            (folder / SINGLE_FILE).unlink(missing_ok=True)  # it would win over the index
        _sync_dir(folder)  # the weights are durable before the config that commits them
        os.replace(pending[CONFIG_FILE], folder / CONFIG_FILE)  # 3.
        del pending[CONFIG_FILE]
        _sync_dir(folder)
    finally:
        for tmp in pending.values():
            tmp.unlink(missing_ok=True)
    stale = [path for path in folder.iterdir() if path.name not in writers and (
        path.name in (SINGLE_FILE, INDEX_FILE) or SHARD_PATTERN.fullmatch(path.name))]
    for path in sorted(stale, key=lambda path: path.name != INDEX_FILE):  # 4. (the index before its shards)
        path.unlink(missing_ok=True)
    if stale:
        _sync_dir(folder)
    return list(writers)


def _is_checkpoint_file(name: str) -> bool:
    return name in (CONFIG_FILE, SINGLE_FILE, INDEX_FILE) or bool(SHARD_PATTERN.fullmatch(name))


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")
