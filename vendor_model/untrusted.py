"""Loading untrusted checkpoint and pickle files without running code from them.

Checkpoints (``.ckpt`` / ``.pt`` / ``.pth``) and ``.pkl`` files are Python pickles, and
unpickling an arbitrary pickle can run arbitrary code. This module never does that:

* :func:`load_torch_file` reads a ``torch.save`` file (for example a PyTorch-Lightning
  1.9 ``.ckpt``) with ``torch.load(..., weights_only=True)`` only. Before loading, it
  lists every Python name the file's pickle refers to that torch does not already
  allow (``torch.serialization.get_unsafe_globals_in_checkpoint``). Names under a short
  list of known-harmless prefixes (omegaconf, Lightning, typing, pathlib, argparse,
  collections, numpy, a few builtin types) are mapped to *stand-ins*: inert placeholder
  classes that never import the named module and never run anything; they only record
  the arguments and state the pickle hands them. Any other name (``posix.system``,
  ``builtins.eval``, ``subprocess.Popen``, a model class, ...) makes the whole file
  refused with :class:`UntrustedFileError` before a single byte is unpickled.
* :func:`load_numpy_pickle` reads old (Python 2 era) pickles of numpy arrays, such as
  FLAME's ``templates.pkl`` or ``FLAME_masks.pkl``, with a restricted unpickler that
  can only rebuild numpy arrays, numpy scalars and builtin containers.

The tensors of a checkpoint (``state_dict``, optimizer states) come back as real
tensors; everything outside torch's own allow-list comes back as stand-ins.
"""

from __future__ import annotations

import io
import os
import pickle
import re
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterable

__all__ = [
    "UntrustedFileError",
    "StandIn",
    "BENIGN_PREFIXES",
    "BENIGN_NAMES",
    "is_benign_global",
    "is_stand_in",
    "stand_in_name",
    "load_torch_file",
    "load_numpy_pickle",
]


class UntrustedFileError(ValueError):
    """A checkpoint or pickle file was refused or could not be read safely."""


# --------------------------------------------------------------------------------------
# The allow-list of names that may be replaced by stand-ins
# --------------------------------------------------------------------------------------

#: Module prefixes whose classes and functions are known to appear in harmless
#: checkpoint metadata (Lightning hyper-parameters, callback and loop states). Names
#: under them are never imported: they are replaced by inert stand-ins.
BENIGN_PREFIXES: tuple[str, ...] = (
    "omegaconf.",
    "pytorch_lightning.",
    "lightning.",
    "lightning_fabric.",
    "lightning_utilities.",
    "typing.",
    "typing_extensions.",
    "pathlib.",
    "argparse.",
    "collections.",
    "numpy.",
    "enum.",
    "datetime.",
    "decimal.",
    "fractions.",
    "uuid.",
)

#: Single names outside those prefixes that are allowed (also as stand-ins).
#: ``operator.getitem`` (pickled as ``_operator.getitem``) is how protocol-2 pickles rebuild ``typing`` generics such as
#: ``Optional[int]``; the builtins are types used as values (``object_type=dict``,
#: ``type(None)``), never the dangerous builtins (eval, exec, getattr, __import__, open...).
BENIGN_NAMES: frozenset[str] = frozenset(
    {
        "operator.getitem",
        "_operator.getitem",
        "builtins.object",
        "builtins.type",
        "builtins.NoneType",
        "builtins.dict",
        "builtins.list",
        "builtins.tuple",
        "builtins.set",
        "builtins.frozenset",
        "builtins.str",
        "builtins.bytes",
        "builtins.bytearray",
        "builtins.int",
        "builtins.float",
        "builtins.complex",
        "builtins.bool",
        "builtins.slice",
        "builtins.range",
        "builtins.Ellipsis",
        "builtins.NotImplemented",
    }
)

# Names (after the prefix check) that are dict subclasses: pickle fills them with
# SETITEMS, which torch's weights-only unpickler only allows on a real dict /
# OrderedDict, so their stand-in is a plain ``OrderedDict`` holding the items.
_MAPPING_NAMES = frozenset({"collections.defaultdict", "collections.UserDict"})
_MAPPING_SUFFIXES = (".AttributeDict",)
# Likewise list-like classes filled with APPENDS become a plain ``list``.
_SEQUENCE_NAMES = frozenset({"collections.deque", "collections.UserList"})

# Harmless builtin types that are more useful as themselves than as stand-ins.
_REAL_BUILTINS = {"builtins.frozenset": frozenset}


def is_benign_global(name: str) -> bool:
    """True when the pickle global ``name`` ("module.qualname") may become a stand-in."""
    if name in BENIGN_NAMES:
        return True
    if name.startswith(BENIGN_PREFIXES):
        # "collections.abc" etc. are fine; dunder tricks such as "typing.__builtins__"
        # are not names a real checkpoint uses.
        last = name.rsplit(".", 1)[-1]
        return not (last.startswith("__") and last.endswith("__"))
    return False


# --------------------------------------------------------------------------------------
# Stand-ins
# --------------------------------------------------------------------------------------


class StandIn:
    """Inert placeholder for a class or function named in an untrusted pickle.

    One subclass is made per referenced name (its class attribute ``_untrusted_name``
    holds it). Calling it, ``__new__``-ing it or setting its state runs nothing: the
    arguments are kept in ``_untrusted_args`` / ``_untrusted_kwargs`` and the pickled
    state in ``_untrusted_state`` so that callers can inspect them.
    Stand-ins cannot be pickled again: drop them before
    re-saving a checkpoint.
    """

    _untrusted_name: str = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> "StandIn":
        self = object.__new__(cls)
        object.__setattr__(self, "_untrusted_args", args)
        object.__setattr__(self, "_untrusted_kwargs", kwargs)
        object.__setattr__(self, "_untrusted_state", None)
        return self

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # noqa: D401 - accepts anything
        pass

    def __setstate__(self, state: Any) -> None:
        object.__setattr__(self, "_untrusted_state", state)

    def __repr__(self) -> str:
        return f"<stand-in for {type(self)._untrusted_name}>"


class _MappingStandIn:
    """Stand-in for dict subclasses: building it gives a plain OrderedDict."""

    _untrusted_name: str = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> OrderedDict:  # type: ignore[misc]
        return OrderedDict()


class _SequenceStandIn:
    """Stand-in for list-like classes: building it gives a plain list."""

    _untrusted_name: str = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> list:  # type: ignore[misc]
        return []


def _make_stand_in(name: str) -> Any:
    if name in _REAL_BUILTINS:
        return _REAL_BUILTINS[name]
    if name in _MAPPING_NAMES or name.endswith(_MAPPING_SUFFIXES):
        base: type = _MappingStandIn
    elif name in _SEQUENCE_NAMES:
        base = _SequenceStandIn
    else:
        base = StandIn
    return type(f"StandIn[{name}]", (base,), {"_untrusted_name": name, "__module__": __name__})


def is_stand_in(obj: Any) -> bool:
    """True for a stand-in instance or a stand-in class."""
    return isinstance(obj, StandIn) or (
        isinstance(obj, type) and issubclass(obj, (StandIn, _MappingStandIn, _SequenceStandIn))
    )


def stand_in_name(obj: Any) -> str | None:
    """The original "module.name" a stand-in instance or class replaces, else None."""
    if not is_stand_in(obj):
        return None
    return obj._untrusted_name


# --------------------------------------------------------------------------------------
# torch.save files
# --------------------------------------------------------------------------------------


def _check_regular_file(path: Path, what: str) -> None:
    if not path.exists():
        raise FileNotFoundError(f"{what} not found: {path}")
    if not path.is_file():
        raise UntrustedFileError(f"{what} is not a regular file: {path}")


def _refuse(path: Path, bad: Iterable[str]) -> UntrustedFileError:
    bad = sorted(set(bad))
    listed = ", ".join(bad)
    return UntrustedFileError(
        f"Refusing to load {path}: its pickle refers to {listed}, which is not on the list of "
        "known-harmless names. Loading it could run code on this computer, so the file was "
        "not loaded. Only use checkpoints from a source you trust, or re-save the weights "
        "as a plain state_dict of tensors."
    )


def _legacy_magic() -> bytes:
    import torch

    return pickle.dumps(torch.serialization.MAGIC_NUMBER, protocol=2)


_GLOBAL_IN_ERROR = re.compile(r"GLOBAL ([\w.]+)")


def _name_from_torch_error(message: str) -> str | None:
    """The global named in a weights-only UnpicklingError message, if any."""
    match = _GLOBAL_IN_ERROR.search(message)
    if not match:
        return None
    name = match.group(1)
    # torch shortens "builtins.eval" to "eval" in this message.
    return name if "." in name else f"builtins.{name}"


def load_torch_file(path: str | os.PathLike) -> dict:
    """Load a ``torch.save`` file (e.g. a Lightning ``.ckpt``) without running its code.

    Only ``torch.load(..., weights_only=True, map_location="cpu")`` is used. Globals
    under :data:`BENIGN_PREFIXES` / :data:`BENIGN_NAMES` become inert stand-ins; any
    other non-torch global gets the file refused with :class:`UntrustedFileError`.

    Returns the top-level dict (tensors are real CPU tensors). Raises
    ``FileNotFoundError`` for a missing file and :class:`UntrustedFileError` for a
    refused, damaged or non-torch file, or one whose top level is not a dict.
    """
    path = Path(path)
    _check_regular_file(path, "Checkpoint file")

    with open(path, "rb") as fh:
        head = fh.read(64)
        fh.seek(0)
        if head.startswith(b"PK\x03\x04"):
            result = _load_zip_checkpoint(path, fh)
        elif head.startswith(_legacy_magic()):
            result = _load_legacy_checkpoint(path, fh)
        else:
            raise UntrustedFileError(
                f"{path} is not a PyTorch checkpoint (torch.save file): it is neither a "
                "torch zip archive nor a legacy torch file."
            )

    if not isinstance(result, dict):
        raise UntrustedFileError(
            f"{path} holds a {type(result).__name__} at its top level, not a dict "
            "(a checkpoint or state_dict was expected)."
        )
    return result


def _safe_torch_load(path: Path, fh: io.BufferedReader, mapping: dict[str, Any]) -> Any:
    """``torch.load(weights_only=True)`` with ``mapping`` (name -> stand-in) allowed.

    ``torch.serialization.safe_globals`` accepts ``(object, "module.name")`` tuples, which
    make torch's weights-only unpickler hand out ``object`` for that name without
    importing anything. The allowance is process-wide while the block runs; another
    thread loading at the same time could only ever receive the same inert stand-ins.
    """
    import torch

    fh.seek(0)
    with torch.serialization.safe_globals([(obj, name) for name, obj in mapping.items()]):
        return torch.load(fh, weights_only=True, map_location="cpu")


def _load_zip_checkpoint(path: Path, fh: io.BufferedReader) -> Any:
    import torch

    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(fh)
    except ValueError as exc:  # e.g. a TorchScript archive
        raise UntrustedFileError(f"{path} is not a torch.save checkpoint: {exc}") from None
    except (RuntimeError, EOFError, pickle.UnpicklingError, KeyError, zipfile.BadZipFile) as exc:
        raise UntrustedFileError(
            f"{path} could not be read as a PyTorch checkpoint; it is damaged, truncated or "
            f"not a torch.save file ({type(exc).__name__}: {_short(exc)})."
        ) from None

    bad = [n for n in names if not is_benign_global(n)]
    if bad:
        raise _refuse(path, bad)
    mapping = {n: _make_stand_in(n) for n in names}
    try:
        return _safe_torch_load(path, fh, mapping)
    except pickle.UnpicklingError as exc:
        raise UntrustedFileError(
            f"{path} could not be loaded safely: {_short(exc)}"
        ) from None
    except (RuntimeError, EOFError, ValueError, TypeError, AttributeError, KeyError,
            IndexError, zipfile.BadZipFile) as exc:
        raise UntrustedFileError(
            f"{path} could not be read as a PyTorch checkpoint; it is damaged or truncated "
            f"({type(exc).__name__}: {_short(exc)})."
        ) from None


def _load_legacy_checkpoint(path: Path, fh: io.BufferedReader) -> Any:
    """Pre-zip torch.save format: names are found one at a time from torch's refusals."""
    mapping: dict[str, Any] = {}
    for _ in range(256):
        try:
            return _safe_torch_load(path, fh, mapping)
        except pickle.UnpicklingError as exc:
            name = _name_from_torch_error(str(exc))
            if name is None or name in mapping:
                raise UntrustedFileError(
                    f"{path} could not be loaded safely: {_short(exc)}"
                ) from None
            if not is_benign_global(name):
                raise _refuse(path, [name]) from None
            mapping[name] = _make_stand_in(name)
        except (RuntimeError, EOFError, ValueError, TypeError, AttributeError, KeyError,
                IndexError) as exc:
            raise UntrustedFileError(
                f"{path} could not be read as a PyTorch checkpoint; it is damaged or "
                f"truncated ({type(exc).__name__}: {_short(exc)})."
            ) from None
    raise UntrustedFileError(f"{path} refers to too many different Python names to load.")


def _short(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------------------
# Old numpy pickles
# --------------------------------------------------------------------------------------


def _numpy_multiarray():
    try:
        import numpy._core.multiarray as multiarray  # numpy >= 2 (and the 1.26 shim)
    except ImportError:  # pragma: no cover - older numpy
        import numpy.core.multiarray as multiarray
    return multiarray


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that can only rebuild numpy arrays/scalars and builtin containers."""

    def __init__(self, file: Any, *, encoding: str, source: str) -> None:
        super().__init__(file, encoding=encoding)
        self._source = source
        import numpy as np

        multiarray = _numpy_multiarray()

        def reconstruct(subtype: Any, shape: Any, dtype: Any) -> Any:
            if subtype is not np.ndarray or not isinstance(dtype, (bytes, str, np.dtype)):
                raise UntrustedFileError(
                    f"{source}: refused an array of type {subtype!r}; only plain numpy "
                    "arrays are allowed."
                )
            return multiarray._reconstruct(np.ndarray, shape, dtype)

        def scalar(dtype: Any, *args: Any) -> Any:
            if not isinstance(dtype, np.dtype):
                raise UntrustedFileError(f"{source}: malformed numpy scalar in the pickle.")
            return multiarray.scalar(dtype, *args)

        import _codecs

        self._allowed: dict[tuple[str, str], Any] = {
            ("numpy.core.multiarray", "_reconstruct"): reconstruct,
            ("numpy._core.multiarray", "_reconstruct"): reconstruct,
            ("numpy.core.multiarray", "scalar"): scalar,
            ("numpy._core.multiarray", "scalar"): scalar,
            ("numpy", "ndarray"): np.ndarray,
            ("numpy", "dtype"): np.dtype,
            ("_codecs", "encode"): _codecs.encode,
            ("builtins", "dict"): dict,
            ("builtins", "list"): list,
            ("builtins", "tuple"): tuple,
            ("builtins", "set"): set,
            ("builtins", "frozenset"): frozenset,
            ("builtins", "bytearray"): bytearray,
            ("builtins", "complex"): complex,
            ("collections", "OrderedDict"): OrderedDict,
        }

    def find_class(self, module: str, name: str) -> Any:
        module = {"__builtin__": "builtins", "copy_reg": "copyreg"}.get(module, module)
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise UntrustedFileError(
                f"Refusing to load {self._source}: its pickle refers to {module}.{name}, which "
                "is not needed for numpy arrays. Loading it could run code on this computer, "
                "so the file was not loaded."
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise UntrustedFileError(f"{self._source}: unsupported persistent id in the pickle.")


def load_numpy_pickle(path: str | os.PathLike, encoding: str = "latin1") -> Any:
    """Load a pickle of numpy arrays (dicts/lists/tuples of arrays) without running code.

    ``encoding="latin1"`` reads Python 2 pickles (their byte strings hold array data).
    Anything other than numpy arrays, numpy scalars and builtin containers is refused
    with :class:`UntrustedFileError`; a missing file raises ``FileNotFoundError``.
    """
    path = Path(path)
    _check_regular_file(path, "Pickle file")
    with open(path, "rb") as fh:
        unpickler = _NumpyOnlyUnpickler(fh, encoding=encoding, source=str(path))
        try:
            return unpickler.load()
        except UntrustedFileError:
            raise
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
                KeyError, IndexError, UnicodeDecodeError, MemoryError) as exc:
            raise UntrustedFileError(
                f"{path} could not be read as a pickle of numpy arrays; it is damaged, "
                f"truncated or in another format ({type(exc).__name__}: {_short(exc)})."
            ) from None
