"""Specification of vendor_model.untrusted: loading checkpoints and pickles without running code.

Checkpoints and pickles are untrusted files. The loaders may only rebuild tensors, numpy
arrays, builtin containers and inert stand-ins; a file that names anything that could run
code is refused before it is unpickled, and its payload never runs.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import shlex
import subprocess
import sys
import types
import typing
import zipfile
from collections import OrderedDict, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch

from vendor_model import untrusted
from vendor_model.untrusted import (
    StandIn,
    UntrustedFileError,
    is_benign_global,
    is_stand_in,
    load_numpy_pickle,
    load_torch_file,
    stand_in_name,
)

TOPOLOGIES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "topologies"


# --------------------------------------------------------------------------------------
# Helpers that make the test files
# --------------------------------------------------------------------------------------


@contextlib.contextmanager
def fake_modules(classes: dict[str, object]):
    """Make ``"pkg.mod.Name" -> obj`` importable (for pickling) only inside the block.

    Afterwards the fake modules are gone from ``sys.modules``, so a loader that tried to
    import them would fail: whatever loads later can only be a stand-in.
    """
    created: list[str] = []
    try:
        for dotted, obj in classes.items():
            module_name, _, attr = dotted.rpartition(".")
            parts = module_name.split(".")
            for i in range(1, len(parts) + 1):
                name = ".".join(parts[:i])
                if name in created:
                    continue
                if name in sys.modules:
                    raise RuntimeError(f"refusing to shadow the real module {name}")
                sys.modules[name] = types.ModuleType(name)
                created.append(name)
            setattr(sys.modules[module_name], attr, obj)
            obj.__module__ = module_name
            obj.__qualname__ = attr
        yield
    finally:
        for name in created:
            sys.modules.pop(name, None)


# Look-alikes of what a PyTorch-Lightning 1.9 checkpoint pickles (omegaconf configs and
# Lightning's AttributeDict), with the same pickling behaviour as the real classes.


@dataclass
class ContainerMetadata:
    ref_type: typing.Any = typing.Any
    object_type: typing.Any = dict
    optional: bool = True
    key: typing.Any = None
    flags: dict = field(default_factory=dict)
    flags_root: bool = False
    resolver_cache: dict = field(default_factory=lambda: defaultdict(dict))
    key_type: typing.Any = typing.Any
    element_type: typing.Any = typing.Optional[int]


class AnyNode:
    def __init__(self, value, parent):
        self._val = value
        self._parent = parent
        self._metadata = ContainerMetadata()
        self._flags_cache = None

    def __getstate__(self):
        state = dict(self.__dict__)
        del state["_flags_cache"]
        return state


class DictConfig:
    def __init__(self, content, parent=None):
        self._metadata = ContainerMetadata()
        self._parent = parent
        self._flags_cache = None
        self._content = {
            k: DictConfig(v, self) if isinstance(v, dict) else AnyNode(v, self)
            for k, v in content.items()
        }

    def __getstate__(self):
        state = dict(self.__dict__)
        state.pop("_flags_cache", None)
        return state


class AttributeDict(dict):
    pass


LIGHTNING_LOOKALIKES = {
    "omegaconf.base.ContainerMetadata": ContainerMetadata,
    "omegaconf.nodes.AnyNode": AnyNode,
    "omegaconf.dictconfig.DictConfig": DictConfig,
    "pytorch_lightning.utilities.parsing.AttributeDict": AttributeDict,
}

CFG = {"model": {"nfeats": 15069, "latent_dim": 512, "arch": "diffspeaker"}, "lr": 1e-4, "pending": "???"}


def make_state_dict():
    torch.manual_seed(0)
    return OrderedDict(
        [
            ("denoiser.linear.weight", torch.randn(4, 3)),
            ("denoiser.linear.bias", torch.randn(4)),
            ("denoiser.steps", torch.arange(5, dtype=torch.int64)),
            ("vertice_map.weight", torch.randn(2, 2, dtype=torch.float64)),
        ]
    )


def save_lightning_like_checkpoint(path: Path, legacy: bool = False) -> OrderedDict:
    """A torch.save file shaped like a Lightning 1.9 .ckpt; returns its state_dict."""
    state_dict = make_state_dict()
    with fake_modules(LIGHTNING_LOOKALIKES):
        checkpoint = {
            "epoch": 7,
            "global_step": 1234,
            "pytorch-lightning_version": "1.9.5",
            "state_dict": state_dict,
            "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {"total": {"ready": 8}}}},
            "callbacks": {
                "ModelCheckpoint{'monitor': None}": {
                    "best_model_score": np.float64(0.25),
                    "dirpath": Path("/tmp/checkpoints"),
                    "kth_value": np.array([1.5, 2.5], dtype=np.float32),
                }
            },
            "optimizer_states": [
                {"state": {0: {"exp_avg": torch.zeros(3)}}, "param_groups": [{"lr": 1e-4, "params": [0]}]}
            ],
            "lr_schedulers": [],
            "hparams_name": "kwargs",
            "hyper_parameters": {"cfg": DictConfig(CFG), "extra": AttributeDict(a=1, b=[1, 2])},
            "hparams_type": DictConfig,
            "unique_ids": frozenset({1, 2}),
        }
        torch.save(checkpoint, path, _use_new_zipfile_serialization=not legacy)
    return state_dict


def assert_same_tensors(loaded: dict, expected: dict) -> None:
    assert list(loaded) == list(expected)
    for key, tensor in expected.items():
        assert isinstance(loaded[key], torch.Tensor)
        assert loaded[key].dtype == tensor.dtype
        assert torch.equal(loaded[key], tensor), key


class RunsShell:
    """Pickles as ``os.system("touch MARKER")`` (GLOBAL posix.system)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


class RunsExec:
    """Pickles as ``exec("open(MARKER, 'w').close()")`` (GLOBAL builtins.exec)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').close()",))


class RunsPopen:
    """Pickles as ``subprocess.Popen(["touch", MARKER])``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (subprocess.Popen, (["touch", str(self.marker)],))


class RunsNumpyExec:
    """A payload under an allow-listed prefix: numpy's test helper ``runstring`` exec()s."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        from numpy.testing._private.utils import runstring

        return (runstring, (f"open({str(self.marker)!r}, 'w').close()", {}))


class WritesMarker:
    """Creates the marker whenever it is really constructed or has its state set."""

    def __init__(self, marker):
        Path(marker).touch()
        self.marker = marker

    def __reduce__(self):
        return (type(self), (self.marker,), {"marker": self.marker})

    def __setstate__(self, state):
        Path(state["marker"]).touch()


@pytest.mark.parametrize("payload", [RunsExec, RunsNumpyExec])
def test_control_the_python_payloads_used_here_are_live(tmp_path, payload):
    """Plain pickle runs these payloads, so the refusals below are meaningful."""
    marker = tmp_path / "pwned"
    pickle.loads(pickle.dumps({"x": payload(marker)}, protocol=2))
    assert marker.exists()


# --------------------------------------------------------------------------------------
# load_torch_file: what loads
# --------------------------------------------------------------------------------------


def test_plain_state_dict_checkpoint_loads(tmp_path):
    path = tmp_path / "plain.pt"
    state_dict = make_state_dict()
    torch.save({"state_dict": state_dict}, path)

    loaded = load_torch_file(path)

    assert list(loaded) == ["state_dict"]
    assert_same_tensors(loaded["state_dict"], state_dict)


def test_bare_state_dict_loads_and_path_may_be_a_string(tmp_path):
    path = tmp_path / "bare.pth"
    state_dict = make_state_dict()
    torch.save(state_dict, path)

    assert_same_tensors(load_torch_file(str(path)), state_dict)


def test_only_weights_only_torch_load_is_used(tmp_path, monkeypatch):
    path = tmp_path / "plain.pt"
    torch.save({"state_dict": make_state_dict()}, path)
    calls = []
    real_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs)
        assert kwargs.get("weights_only") is True
        assert kwargs.get("map_location") == "cpu"
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    load_torch_file(path)
    assert len(calls) == 1


@pytest.mark.parametrize("legacy", [False, True], ids=["zip-format", "legacy-format"])
def test_lightning_style_checkpoint_loads_with_stand_ins(tmp_path, legacy):
    path = tmp_path / "diffspeaker.ckpt"
    state_dict = save_lightning_like_checkpoint(path, legacy=legacy)
    # The look-alike modules are gone: nothing can import "omegaconf" or "pytorch_lightning".
    assert "omegaconf" not in sys.modules and "omegaconf.dictconfig" not in sys.modules

    ckpt = load_torch_file(path)

    assert_same_tensors(ckpt["state_dict"], state_dict)
    assert ckpt["epoch"] == 7 and ckpt["global_step"] == 1234
    assert ckpt["optimizer_states"][0]["state"][0]["exp_avg"].shape == (3,)
    # Nothing was imported to load it.
    assert "omegaconf" not in sys.modules and "pytorch_lightning" not in sys.modules

    cfg = ckpt["hyper_parameters"]["cfg"]
    assert isinstance(cfg, StandIn) and is_stand_in(cfg)
    assert stand_in_name(cfg) == "omegaconf.dictconfig.DictConfig"
    assert "omegaconf.dictconfig.DictConfig" in repr(cfg)
    assert stand_in_name(ckpt["hparams_type"]) == "omegaconf.dictconfig.DictConfig"
    # Lightning's AttributeDict (a dict subclass) comes back as a plain mapping.
    assert dict(ckpt["hyper_parameters"]["extra"]) == {"a": 1, "b": [1, 2]}
    assert ckpt["unique_ids"] == frozenset({1, 2})



def test_stand_ins_accept_anything_and_do_nothing():
    cls = untrusted._make_stand_in("omegaconf.dictconfig.DictConfig")
    obj = cls(1, 2, key="value")
    obj.__setstate__({"_content": {"a": 1}})
    assert obj._untrusted_args == (1, 2)
    assert obj._untrusted_kwargs == {"key": "value"}
    assert obj._untrusted_state == {"_content": {"a": 1}}
    assert cls.__new__(cls)._untrusted_state is None
    assert stand_in_name(obj) == "omegaconf.dictconfig.DictConfig"
    assert stand_in_name(42) is None and not is_stand_in(dict)


@pytest.mark.parametrize(
    "name",
    [
        "omegaconf.dictconfig.DictConfig",
        "omegaconf.base.ContainerMetadata",
        "pytorch_lightning.utilities.parsing.AttributeDict",
        "lightning.fabric.utilities.data.AttributeDict",
        "lightning_fabric.utilities.data.AttributeDict",
        "typing.Any",
        "pathlib.PosixPath",
        "argparse.Namespace",
        "collections.defaultdict",
        "numpy.core.multiarray.scalar",
        "numpy._core.multiarray._reconstruct",
        "builtins.frozenset",
        "builtins.dict",
        "_operator.getitem",
    ],
)
def test_benign_names(name):
    assert is_benign_global(name)


@pytest.mark.parametrize(
    "name",
    [
        "posix.system",
        "nt.system",
        "os.system",
        "builtins.eval",
        "builtins.exec",
        "builtins.getattr",
        "builtins.__import__",
        "builtins.open",
        "subprocess.Popen",
        "torch.nn.modules.linear.Linear",
        "vendor_model.model.DiffSpeaker",
        "operator.attrgetter",
        "omegaconf.__builtins__",
    ],
)
def test_names_that_are_not_benign(name):
    assert not is_benign_global(name)


# --------------------------------------------------------------------------------------
# load_torch_file: what is refused, and payloads never run
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload, named",
    [(RunsShell, "system"), (RunsExec, "builtins.exec"), (RunsPopen, "Popen")],
    ids=["os.system", "builtins.exec", "subprocess.Popen"],
)
@pytest.mark.parametrize("legacy", [False, True], ids=["zip-format", "legacy-format"])
def test_malicious_checkpoint_is_refused_and_never_runs(tmp_path, payload, named, legacy):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    torch.save(
        {"state_dict": make_state_dict(), "hyper_parameters": {"cfg": payload(marker)}},
        path,
        _use_new_zipfile_serialization=not legacy,
    )

    with pytest.raises(UntrustedFileError) as info:
        load_torch_file(path)

    message = str(info.value)
    assert named in message
    assert "could run code" in message and "not loaded" in message
    assert not marker.exists()


def test_payload_under_an_allow_listed_name_cannot_run(tmp_path):
    """Even a real, importable class under an allowed prefix is never used."""
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    with fake_modules({"omegaconf.evil.WritesMarker": WritesMarker}):
        payload = WritesMarker(marker)
        marker.unlink()
        torch.save({"state_dict": make_state_dict(), "hyper_parameters": {"cfg": payload}}, path)

        # Control: the file really carries a live payload (no tensors here, so plain
        # pickle can read data.pkl).
        control = tmp_path / "control.ckpt"
        torch.save({"cfg": payload}, control)
        with zipfile.ZipFile(control) as zf:
            data_pkl = next(n for n in zf.namelist() if n.endswith("data.pkl"))
            pickle.loads(zf.read(data_pkl))
        assert marker.exists()
        marker.unlink()

        # The module is still importable while loading; the stand-in ignores it.
        loaded = load_torch_file(path)

    assert not marker.exists()
    assert stand_in_name(loaded["hyper_parameters"]["cfg"]) == "omegaconf.evil.WritesMarker"
    assert_same_tensors(loaded["state_dict"], make_state_dict())


def test_exec_helper_under_numpy_prefix_becomes_an_inert_stand_in(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": make_state_dict(), "x": RunsNumpyExec(marker)}, path)

    loaded = load_torch_file(path)

    assert not marker.exists()
    assert stand_in_name(loaded["x"]) == "numpy.testing._private.utils.runstring"


def test_whole_model_pickles_are_refused(tmp_path):
    path = tmp_path / "model.pt"
    torch.save({"model": torch.nn.Linear(2, 2)}, path)
    with pytest.raises(UntrustedFileError, match="torch.nn.modules.linear.Linear"):
        load_torch_file(path)


# --------------------------------------------------------------------------------------
# load_torch_file: files that are missing or not checkpoints
# --------------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_torch_file(tmp_path / "nope.ckpt")


def test_directory_is_not_a_checkpoint(tmp_path):
    with pytest.raises(UntrustedFileError, match="not a regular file"):
        load_torch_file(tmp_path)


@pytest.mark.parametrize(
    "content",
    [b"", b"model:\n  nfeats: 15069\n", pickle.dumps({"state_dict": {}}), b"\x00" * 100],
    ids=["empty", "text", "plain-pickle", "zeros"],
)
def test_files_that_are_not_torch_files(tmp_path, content):
    path = tmp_path / "x.ckpt"
    path.write_bytes(content)
    with pytest.raises(UntrustedFileError, match="not a PyTorch checkpoint"):
        load_torch_file(path)


def test_truncated_checkpoint(tmp_path):
    path = tmp_path / "full.ckpt"
    torch.save({"state_dict": make_state_dict()}, path)
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(UntrustedFileError, match="damaged|truncated"):
        load_torch_file(cut)


def test_zip_that_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "archive.ckpt"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("readme.txt", "hello")
    with pytest.raises(UntrustedFileError):
        load_torch_file(path)


def test_top_level_must_be_a_dict(tmp_path):
    path = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), path)
    with pytest.raises(UntrustedFileError, match="not a dict"):
        load_torch_file(path)


# --------------------------------------------------------------------------------------
# load_numpy_pickle
# --------------------------------------------------------------------------------------


def make_templates():
    return {
        "FaceTalk_170725_00137_TA": np.arange(15, dtype=np.float32).reshape(5, 3),
        "FaceTalk_170728_03272_TA": np.linspace(0, 1, 15).reshape(5, 3),
        "indices": np.array([3, 1, 4], dtype=np.int64),
        "fortran": np.asfortranarray(np.arange(6, dtype=np.int16).reshape(2, 3)),
    }


@pytest.mark.parametrize("protocol", [0, 2])
def test_numpy_pickle_of_a_dict_of_arrays_loads(tmp_path, protocol):
    expected = make_templates()
    path = tmp_path / "templates.pkl"
    path.write_bytes(pickle.dumps(expected, protocol=protocol))

    loaded = load_numpy_pickle(path)

    assert set(loaded) == set(expected)
    for key, array in expected.items():
        assert loaded[key].dtype == array.dtype
        np.testing.assert_array_equal(loaded[key], array)


def test_numpy_pickle_with_containers_and_scalars(tmp_path):
    value = {"list": [np.float64(1.5), np.int32(7)], "tuple": (np.zeros(2),), "set": {1, 2}}
    path = tmp_path / "mixed.pkl"
    path.write_bytes(pickle.dumps(value, protocol=2))
    loaded = load_numpy_pickle(path)
    assert loaded["list"] == [1.5, 7] and loaded["list"][1].dtype == np.int32
    assert loaded["set"] == {1, 2}


def _py2_string(raw: bytes) -> bytes:
    return b"S'" + "".join(f"\\x{b:02x}" for b in raw).encode("ascii") + b"'\n"


def test_python2_era_protocol0_pickle_loads_with_latin1(tmp_path):
    """What Python 2 wrote for {'neutral': float32 array [2, 3]}: raw bytes as a str."""
    array = np.array([[0.0, 1.0, 2.0], [3.0, -4.5, 1e-3]], dtype="<f4")
    data = (
        b"(dp0\nS'neutral'\np1\ncnumpy.core.multiarray\n_reconstruct\np2\n(cnumpy\nndarray\np3\n"
        b"(I0\ntp4\nS'b'\np5\ntp6\nRp7\n(I1\n(I2\nI3\ntp8\ncnumpy\ndtype\np9\n(S'f4'\np10\nI0\nI1\n"
        b"tp11\nRp12\n(I3\nS'<'\np13\nNNNI-1\nI-1\nI0\ntp14\nbI00\n"
        + _py2_string(array.tobytes())
        + b"p15\ntp16\nbs."
    )
    path = tmp_path / "py2.pkl"
    path.write_bytes(data)

    loaded = load_numpy_pickle(path)

    np.testing.assert_array_equal(loaded["neutral"], array)


@pytest.mark.parametrize("payload", [RunsShell, RunsExec, RunsPopen, RunsNumpyExec])
@pytest.mark.parametrize("protocol", [0, 2])
def test_numpy_pickle_with_code_is_refused_and_never_runs(tmp_path, payload, protocol):
    marker = tmp_path / "pwned"
    path = tmp_path / "templates.pkl"
    path.write_bytes(pickle.dumps({"a": np.zeros(3), "b": payload(marker)}, protocol=protocol))

    with pytest.raises(UntrustedFileError, match="could run code"):
        load_numpy_pickle(path)
    assert not marker.exists()


def test_numpy_pickle_refuses_array_subclasses(tmp_path):
    path = tmp_path / "masked.pkl"
    path.write_bytes(pickle.dumps(np.ma.masked_array([1, 2], mask=[0, 1]), protocol=2))
    with pytest.raises(UntrustedFileError):
        load_numpy_pickle(path)


def test_numpy_pickle_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_numpy_pickle(tmp_path / "missing.pkl")
    text = tmp_path / "text.pkl"
    text.write_text("not a pickle at all\n")
    with pytest.raises(UntrustedFileError):
        load_numpy_pickle(text)
    cut = tmp_path / "cut.pkl"
    cut.write_bytes(pickle.dumps(make_templates(), protocol=2)[:200])
    with pytest.raises(UntrustedFileError, match="damaged|truncated"):
        load_numpy_pickle(cut)


# --------------------------------------------------------------------------------------
# The research-only FLAME masks (read in place, never copied)
# --------------------------------------------------------------------------------------


def test_flame_masks_pickle():
    path = TOPOLOGIES / "FLAME_masks.pkl"
    if not path.is_file():
        pytest.skip(f"research-only fixture not available: {path}")

    masks = load_numpy_pickle(path)

    assert isinstance(masks, dict) and len(masks) == 14
    assert len(masks["lips"]) == 254
    assert {k: len(v) for k, v in masks.items()}["face"] == 1787
    for indices in masks.values():
        assert indices.dtype == np.int64 and indices.ndim == 1
        assert indices.min() >= 0 and indices.max() <= 5022
    upper = np.union1d(masks["forehead"], masks["eye_region"])
    assert len(upper) == 827
