from __future__ import annotations

import pytest

from pipeline import composefile
from pipeline.errors import ConfigError

IMAGE = "ghcr.io/bizoholic-digital/bizosaas-brain-gateway"

COMPOSE = """
x-common: &common
  restart: unless-stopped
services:
  brain:
    <<: *common
    image: ${BRAIN_GATEWAY_IMAGE:-ghcr.io/bizoholic-digital/bizosaas-brain-gateway:staging}
  brain-worker:
    image: ghcr.io/bizoholic-digital/bizosaas-brain-gateway:staging
    pull_policy: always
  brain-cron:
    image: GHCR.io/Bizoholic-Digital/bizosaas-brain-gateway
  saleor:
    image: ghcr.io/saleor/saleor:3.20
  local:
    build: ./local
"""


def test_finds_every_service_that_uses_our_image_and_how():
    """Each compose service naming our image is found with its form, variable and pull policy."""
    parsed = composefile.parse(COMPOSE, file="backend.yml")
    uses = {u.compose_service: u for u in parsed.references(IMAGE, "BRAIN_GATEWAY_IMAGE")}
    assert set(uses) == {"brain", "brain-worker", "brain-cron"}
    assert uses["brain"].form == "variable"
    assert uses["brain"].variable == "BRAIN_GATEWAY_IMAGE"
    assert uses["brain"].default == "ghcr.io/bizoholic-digital/bizosaas-brain-gateway:staging"
    assert (uses["brain-worker"].form, uses["brain-worker"].tag, uses["brain-worker"].pull_always) == (
        "tag",
        "staging",
        True,
    )
    assert (uses["brain-cron"].tag, uses["brain-cron"].pull_always) == ("latest", False)


def test_services_without_image_are_skipped_and_others_do_not_match():
    """A build-only service is not listed, and another project's image is not ours."""
    parsed = composefile.parse(COMPOSE, file="backend.yml")
    assert [u.compose_service for u in parsed.uses] == ["brain", "brain-worker", "brain-cron", "saleor"]
    assert parsed.references("ghcr.io/bizoholic-digital/bizosaas-client-portal", "CLIENT_PORTAL_IMAGE") == ()


@pytest.mark.parametrize(
    ("image", "variable", "default"),
    [
        ("$BRAIN_GATEWAY_IMAGE", "BRAIN_GATEWAY_IMAGE", ""),
        ("${BRAIN_GATEWAY_IMAGE}", "BRAIN_GATEWAY_IMAGE", ""),
        ("${BRAIN_GATEWAY_IMAGE-x:1}", "BRAIN_GATEWAY_IMAGE", "x:1"),
        ("${BRAIN_GATEWAY_IMAGE:?set it}", "BRAIN_GATEWAY_IMAGE", ""),
    ],
)
def test_reads_each_interpolation_form(image, variable, default):
    """All of Compose's whole-value variable forms are read as the variable, with any default."""
    parsed = composefile.parse(f"services:\n  a:\n    image: '{image}'\n", file="c.yml")
    (use,) = parsed.uses
    assert (use.form, use.variable, use.default) == ("variable", variable, default)


def test_other_variable_with_our_image_as_default_is_reported():
    """A differently named variable whose default is our image counts as a use (with the wrong variable)."""
    text = f"services:\n  a:\n    image: ${{TAG_IMAGE:-{IMAGE}:staging}}\n"
    (use,) = composefile.parse(text, file="c.yml").references(IMAGE, "BRAIN_GATEWAY_IMAGE")
    assert use.variable == "TAG_IMAGE"


def test_registry_port_and_digest_are_not_tags():
    """A registry port is not mistaken for a tag, and a digest reference is its own form."""
    text = (
        "services:\n"
        "  a:\n    image: 127.0.0.1:5000/org/app\n"
        "  b:\n    image: 127.0.0.1:5000/org/app@sha256:" + "a" * 64 + "\n"
        "  c:\n    image: 127.0.0.1:5000/org/app:${TAG}\n"
    )
    uses = composefile.parse(text, file="c.yml").references("127.0.0.1:5000/org/app", "APP_IMAGE")
    assert [(u.form, u.tag) for u in uses] == [("tag", "latest"), ("digest", ""), ("tag", "${TAG}")]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("services: [a\n", "bad.yml: is not valid YAML"),
        ("version: '3'\n", "bad.yml: services: is missing"),
        ("- a\n", "bad.yml: services: is missing"),
        ("services: {}\n", "bad.yml: services: should be a mapping"),
        ("services:\n  a: nginx\n", "bad.yml: services.a: should be a mapping"),
        ("services:\n  a:\n    image: [x]\n", "bad.yml: services.a.image: should be an image reference"),
    ],
)
def test_unusable_files_raise_a_config_error_naming_the_file(text, message):
    """YAML that does not parse, or has no usable services, is a ConfigError naming the file."""
    with pytest.raises(ConfigError) as caught:
        composefile.parse(text, file="bad.yml")
    assert str(caught.value).startswith(message)


def test_load_reads_from_disk_and_names_a_missing_file(tmp_path):
    """load parses a file on disk, and a missing file is a ConfigError with its path."""
    path = tmp_path / "compose.yml"
    path.write_text("services:\n  a:\n    image: ${A_IMAGE}\n")
    assert composefile.load(path).uses[0].variable == "A_IMAGE"
    with pytest.raises(ConfigError, match="compose file not found"):
        composefile.load(tmp_path / "missing.yml")
