"""What a Docker Compose file does with the images this pipeline publishes.

Dokploy deploys a compose by writing ``.env`` and running ``docker compose up -d``
without ``--pull always``. So a deploy only changes what runs when the compose file
names the image through the variable the pipeline pins (``image: ${BRAIN_GATEWAY_IMAGE}``),
or when it uses a moving tag *and* ``pull_policy: always``; a moving tag without it
is never re-pulled. This module reads a compose file (PyYAML ``safe_load``: no tags,
no code) and answers, per image of ours, which compose services use it and how.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml

from pipeline.config import shown
from pipeline.errors import ConfigError

ImageForm = Literal["variable", "tag", "digest"]

# The whole value is one variable: $VAR, ${VAR}, ${VAR:-default}, ${VAR-default},
# ${VAR:?message}, ${VAR?message} (the forms Compose interpolates).
_WHOLE_VARIABLE = re.compile(
    r"^\$(?:(?P<bare>[A-Za-z_][A-Za-z0-9_]*)|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<rest>.*))?\})$",
    re.DOTALL,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class ImageUse:
    """One compose service's ``image:`` and ``pull_policy``, as written."""

    compose_service: str
    image: str
    form: ImageForm
    variable: str = ""
    default: str = ""
    pull_always: bool = False

    @property
    def tag(self) -> str:
        """The tag of a literal reference (``latest`` when none is written), else ""."""
        if self.form != "tag":
            return ""
        return _split_tag(self.image)[1] or "latest"


@dataclass(frozen=True, slots=True, kw_only=True)
class ComposeFile:
    """A parsed compose file: each service's image use, in file order."""

    file: str
    uses: tuple[ImageUse, ...]

    def references(self, image: str, variable: str) -> tuple[ImageUse, ...]:
        """The uses of our ``image`` (no tag): through ``variable``, or naming the image itself."""
        return tuple(use for use in self.uses if _refers_to(use, image.lower(), variable))


def load(path: str | Path) -> ComposeFile:
    """Read and parse a compose file from disk."""
    path = Path(path)
    name = shown(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(name, "", "compose file not found; check compose_file in services.toml") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(name, "", f"compose file cannot be read: {e}") from None
    return parse(text, file=name)


def parse(text: str, *, file: str) -> ComposeFile:
    """Parse compose YAML; ``file`` names it in messages."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(file, "", f"is not valid YAML: {' '.join(str(e).split())}") from None
    if not isinstance(data, Mapping) or "services" not in data:
        raise ConfigError(file, "services", "is missing: a compose file lists its containers under 'services:'")
    services = data["services"]
    if not isinstance(services, Mapping) or not services:
        raise ConfigError(file, "services", "should be a mapping of service name to its settings, with at least one")
    uses = []
    for name, body in services.items():
        if not isinstance(body, Mapping):
            raise ConfigError(file, f"services.{name}", "should be a mapping of settings (image, ports, ...)")
        image = body.get("image")
        if image is None:
            continue  # built locally (build: only): not an image we publish
        if not isinstance(image, str) or not image.strip():
            raise ConfigError(file, f"services.{name}.image", f"should be an image reference string, got {image!r}")
        uses.append(_use(str(name), image.strip(), pull_always=body.get("pull_policy") == "always"))
    return ComposeFile(file=file, uses=tuple(uses))


def _use(service: str, image: str, *, pull_always: bool) -> ImageUse:
    match = _WHOLE_VARIABLE.match(image)
    if match:
        name = match["bare"] or match["name"]
        default = match["rest"] if match["op"] in (":-", "-") else ""
        return ImageUse(
            compose_service=service,
            image=image,
            form="variable",
            variable=name,
            default=default or "",
            pull_always=pull_always,
        )
    form: ImageForm = "digest" if "@" in image else "tag"
    return ImageUse(compose_service=service, image=image, form=form, pull_always=pull_always)


def _split_tag(reference: str) -> tuple[str, str]:
    """``host/repo:tag`` -> (``host/repo``, ``tag``); a ``:`` in the host is a port, not a tag."""
    name = reference.split("@", 1)[0]
    colon = name.find(":", name.rfind("/") + 1)
    if colon >= 0:
        return name[:colon], name[colon + 1 :]
    return name, ""


def _refers_to(use: ImageUse, image: str, variable: str) -> bool:
    if use.form == "variable":
        if use.variable == variable:
            return True
        # Another variable whose default is our image still means "our image".
        return bool(use.default) and _split_tag(use.default)[0].lower() == image
    return _split_tag(use.image)[0].lower() == image
