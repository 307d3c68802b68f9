"""The experiment configs shipped inside the package, found by name (`bot/synthetic`) from any folder."""
from __future__ import annotations

import difflib
from pathlib import Path

#: Where the packaged YAML files live (src/vreid/configs; the repository's `configs` links here).
PACKAGED_CONFIGS = Path(__file__).resolve().parent.parent / "configs"

#: A name may keep the folder prefix and suffix of the repository path: `configs/bot/synthetic.yaml`.
_PREFIX, _SUFFIX = "configs/", ".yaml"


def packaged_configs() -> dict[str, Path]:
    """Name (`bot/synthetic`, `mbr/archs/mbr-4b`) -> file, for every packaged config, sorted by name."""
    files = sorted(PACKAGED_CONFIGS.rglob(f"*{_SUFFIX}"))
    return {f.relative_to(PACKAGED_CONFIGS).with_suffix("").as_posix(): f for f in files}


def config_name(text: str) -> str:
    """`configs/bot/synthetic.yaml`, `bot/synthetic.yaml` and `bot/synthetic` all name `bot/synthetic`."""
    name = Path(text).as_posix()
    name = name[len(_PREFIX):] if name.startswith(_PREFIX) else name
    return name[: -len(_SUFFIX)] if name.endswith(_SUFFIX) else name


def resolve_config(path_or_name: str | Path) -> Path:
    """The YAML file to read: an existing file on disk always wins, else the packaged config of that name."""
    path = Path(path_or_name)
    if path.is_file():
        return path
    from vreid.config.loader import ConfigError  # here, not at the top: the loader imports this module

    if path.is_absolute():
        raise ConfigError(f"{path}: config file not found; pass the path of a YAML file or a packaged config "
                          "name such as bot/synthetic (`vreid configs` lists them)")
    known = packaged_configs()
    name = config_name(str(path_or_name))
    if name in known:
        return known[name]
    close = difflib.get_close_matches(name, list(known), n=5, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise ConfigError(f"{path_or_name}: config file not found, nor a packaged config of that name; {hint}"
                      "`vreid configs` lists the packaged configs")
