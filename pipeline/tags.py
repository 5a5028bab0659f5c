"""Image tags and references: pure functions, as Kamal keeps its commands.

Tag templates in services.toml use three placeholders:

    {sha}          the short commit (7 hex), with "-dirty" appended for a dirty tree
    {branch}       the branch, sanitised to the Docker tag grammar
    {environment}  the environment name

Every rendered tag must match the OCI tag grammar ``[A-Za-z0-9_][A-Za-z0-9._-]{0,127}``.
The content tag ``src-<first 12 hex of the content key>`` is added by the plan, so
an unchanged service can be found in the registry and reused.
"""

from __future__ import annotations

import re
import string

SHORT_SHA_LENGTH = 7
CONTENT_TAG_PREFIX = "src-"
CONTENT_TAG_HEX = 12
PLACEHOLDERS = ("sha", "branch", "environment")

REPOSITORY_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")

MAX_TAG_LENGTH = 128
MAX_BRANCH_LENGTH = 100

# Sample values that exercise the grammar the way real ones can: the dirty
# marker on the sha, and (for the length) the longest branch sanitising keeps.
_SAMPLE = {"sha": "abcdef1-dirty", "branch": "feature-x", "environment": "staging"}


def check_template(template: str, *, environment: str = "staging") -> str:
    """Why ``template`` is not a usable tag template, or "" when it is."""
    try:
        parsed = [(f, spec, conv) for _, f, spec, conv in string.Formatter().parse(template) if f is not None]
    except ValueError as e:
        return f"{template!r} is not a valid template ({e}); use {{sha}}, {{branch}} or {{environment}}"
    unknown = [f for f, _, _ in parsed if f not in PLACEHOLDERS]
    if unknown:
        return (
            f"{template!r} uses unknown placeholder {{{unknown[0]}}}; "
            f"allowed: {', '.join('{' + p + '}' for p in PLACEHOLDERS)}"
        )
    if any(spec or conv for _, spec, conv in parsed):
        return f"{template!r} formats a placeholder; write {{sha}}, {{branch}} or {{environment}} plainly"
    rendered = template.format(**{**_SAMPLE, "environment": environment})
    if not TAG.match(rendered):
        return (
            f"{template!r} does not render to a valid tag (got {rendered!r}); tags are letters, digits, "
            "'_', '.', '-', at most 128 characters, not starting with '.' or '-'"
        )
    longest = template.format(**{**_SAMPLE, "environment": environment, "branch": "x" * MAX_BRANCH_LENGTH})
    if len(longest) > MAX_TAG_LENGTH:
        return (
            f"{template!r} renders to {len(longest)} characters for a long branch name; "
            f"tags are at most {MAX_TAG_LENGTH}: use {{branch}} once and keep the rest short"
        )
    return ""


def sanitize_branch(branch: str) -> str:
    """A branch name as a tag fragment: ``feature/Login`` → ``feature-login``.

    Docker's tag grammar has no '/', and metadata-action lower-cases too, so we do
    the same to keep tags predictable across tools.
    """
    cleaned = re.sub(r"[^a-z0-9._-]+", "-", branch.lower()).strip(".-")
    return cleaned[:MAX_BRANCH_LENGTH].rstrip(".-") or "detached"


def short_digest(digest: str) -> str:
    """A digest shortened for people: ``sha256:`` and 12 hex digits."""
    algorithm, _, hex_part = digest.partition(":")
    return f"{algorithm}:{hex_part[:12]}" if hex_part else digest


def short_sha(sha: str, *, dirty: bool = False) -> str:
    """The 7-character commit, marked when the tree has uncommitted changes."""
    return sha[:SHORT_SHA_LENGTH] + ("-dirty" if dirty else "")


def render(templates: tuple[str, ...], *, sha: str, branch: str, environment: str, dirty: bool) -> list[str]:
    """The tags for one build, in template order, without duplicates."""
    values = {"sha": short_sha(sha, dirty=dirty), "branch": sanitize_branch(branch), "environment": environment}
    tags: list[str] = []
    for template in templates:
        tag = template.format(**values)
        if tag not in tags:
            tags.append(tag)
    return tags


def content_tag(content_key: str) -> str:
    """The tag that names an image by its inputs: ``src-<12 hex>``."""
    return CONTENT_TAG_PREFIX + content_key[:CONTENT_TAG_HEX]


def is_moving(template: str) -> bool:
    """A tag template without {sha} is overwritten by every build (``staging``, ``latest``)."""
    return "{sha}" not in template


def pinned(image: str, digest: str) -> str:
    """``image@sha256:...``: the reference a deploy pins."""
    return f"{image}@{digest}"
