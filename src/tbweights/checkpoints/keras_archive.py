"""Keras 3 `.keras` archives: a zip of `config.json`, `metadata.json` and `model.weights.h5`.

Only the config JSON and the weights are read; nothing in the archive is
deserialized into Keras objects, so no code from it runs. The config supplies
the layer classes and names that turn the positional `vars/0`, `vars/1`
entries into `dense_1/kernel`, `dense_1/bias`. The weights member is read in
place through the zip, without extracting it to disk.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tbweights.checkpoints import ZIP_MAGIC, Format, LoadOptions, zip_members
from tbweights.checkpoints.hdf5 import H5Source
from tbweights.checkpoints.keras_weights import KerasWeightsWalker
from tbweights.errors import CheckpointError
from tbweights.tensors import NamedTensor

CONFIG_MEMBER = "config.json"
WEIGHTS_MEMBER = "model.weights.h5"
NPZ_WEIGHTS_MEMBER = "model.weights.npz"
# The config of a real model is kilobytes to a few megabytes; refuse absurd sizes.
MAX_CONFIG_BYTES = 64 * 1024 * 1024



def _sniff(path: Path, head: bytes) -> bool:
    if not head.startswith(ZIP_MAGIC):
        return False
    members = zip_members(path)
    return CONFIG_MEMBER in members and (WEIGHTS_MEMBER in members or NPZ_WEIGHTS_MEMBER in members)


def read_config(path: Path) -> dict[str, Any]:
    """Parse the archive's model config as plain JSON."""
    try:
        with zipfile.ZipFile(path) as archive:
            info = archive.getinfo(CONFIG_MEMBER)
            if info.file_size > MAX_CONFIG_BYTES:
                raise CheckpointError(path, f"{CONFIG_MEMBER} is {info.file_size} bytes, too large for a model config")
            config = json.loads(archive.read(info))
    except (zipfile.BadZipFile, OSError, KeyError) as error:
        raise CheckpointError(path, f"cannot read {CONFIG_MEMBER} from the archive ({error})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(path, f"{CONFIG_MEMBER} is not valid JSON ({error}); the archive is corrupt") from None
    if not isinstance(config, dict):
        raise CheckpointError(path, f"{CONFIG_MEMBER} holds a {type(config).__name__}, not a model config object")
    return config


def _read(path: Path, options: LoadOptions) -> Iterator[NamedTensor]:
    if WEIGHTS_MEMBER not in zip_members(path):
        raise CheckpointError(
            path,
            f"the archive stores its weights as {NPZ_WEIGHTS_MEMBER}, which tbweights does not read yet; "
            "save the model again with the default HDF5 weights",
        )
    config = read_config(path)
    with H5Source(path, WEIGHTS_MEMBER) as source:
        yield from KerasWeightsWalker(source, config, options).tensors()


FORMAT = Format(name="Keras archive (.keras)", sniff=_sniff, read=_read, suffixes=(".keras",))
