"""Content keys: a hash of exactly what a build sees, and .dockerignore as Docker reads it."""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from pipeline.config import Service
from pipeline.content import SOURCE_IGNORE, BuildInputs, DockerIgnore, content_key

SERVICE = Service(name="api", context="svc", dockerfile="Dockerfile", build_args={"MODE": "prod"})

FILES = {
    "Dockerfile": "FROM python:3.12 AS runtime\nCOPY . /app\n",
    "app/main.py": "print('hi')\n",
    "app/util.py": "X = 1\n",
    "README.md": "# api\n",
    "docs/guide.md": "guide\n",
    "node_modules/pkg/index.js": "module.exports = 1\n",
    "logs/a/b/debug.log": "noise\n",
    "build/out.bin": "bin\n",
    ".dockerignore": "node_modules\nbuild/\n**/*.log\n*.md\n!README.md\n",
}


def make_tree(root: Path, files: dict[str, str] | None = None) -> Path:
    """Write ``files`` (default: FILES) into ``root/svc``; returns ``root``."""
    for rel, text in (FILES if files is None else files).items():
        path = root / "svc" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def key(root: Path, service: Service = SERVICE) -> str:
    return content_key(service, root)


def test_the_same_inputs_give_the_same_key_anywhere(tmp_path: Path) -> None:
    """Two identical trees in different places have the same key, and it is sha256 hex."""
    first = key(make_tree(tmp_path / "one"))
    assert first == key(make_tree(tmp_path / "two"))
    assert first == key(tmp_path / "one")
    assert len(first) == 64
    assert int(first, 16) >= 0


def edit(rel: str, text: str = "changed\n") -> Callable[[Path], None]:
    def apply(root: Path) -> None:
        path = root / "svc" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")

    return apply


def remove(rel: str) -> Callable[[Path], None]:
    return lambda root: (root / "svc" / rel).unlink()


@pytest.mark.parametrize(
    ("change", "changes_key"),
    [
        pytest.param(edit("app/main.py"), True, id="edit-a-source-file"),
        pytest.param(edit("app/new.py"), True, id="add-a-source-file"),
        pytest.param(remove("app/util.py"), True, id="remove-a-source-file"),
        pytest.param(lambda r: (r / "svc/app/util.py").rename(r / "svc/app/other.py"), True, id="rename-a-file"),
        pytest.param(edit("Dockerfile", "FROM python:3.13\n"), True, id="edit-the-dockerfile"),
        pytest.param(edit("README.md"), True, id="re-included-file"),
        pytest.param(edit(".dockerignore", "node_modules\n"), True, id="edit-the-dockerignore"),
        pytest.param(edit("node_modules/pkg/index.js"), False, id="edit-ignored-directory"),
        pytest.param(edit("node_modules/other/new.js"), False, id="add-under-ignored-directory"),
        pytest.param(edit("build/more.bin"), False, id="trailing-slash-directory-pattern"),
        pytest.param(edit("logs/a/b/debug.log"), False, id="double-star-pattern"),
        pytest.param(edit("app/trace.log"), False, id="double-star-matches-any-depth"),
        pytest.param(edit("docs/guide.md"), True, id="single-star-is-root-only"),
        pytest.param(edit("CHANGELOG.md"), False, id="ignored-markdown-at-root"),
        pytest.param(lambda r: (r / "outside.txt").write_text("x"), False, id="file-outside-the-context"),
        pytest.param(lambda r: (r / "svc/app/empty").mkdir(), False, id="empty-directory"),
        pytest.param(edit("dist/bundle.js"), False, id="build-output-never-uploaded"),
        pytest.param(edit("app/.next/cache/x"), False, id="nested-build-output-never-uploaded"),
        pytest.param(edit("app/__pycache__/main.pyc"), False, id="bytecode-never-uploaded"),
        pytest.param(edit("sdk/client.py"), True, id="root-only-upload-pattern-inside-a-context"),
    ],
)
def test_what_changes_the_key(tmp_path: Path, change: Callable[[Path], None], changes_key: bool) -> None:
    """Only a change to what the build sees (after .dockerignore) changes the key."""
    root = make_tree(tmp_path)
    before = key(root)
    change(root)
    assert (key(root) != before) is changes_key


def test_a_root_context_leaves_out_what_is_never_uploaded(tmp_path: Path) -> None:
    """With the repository root as context, .git and the module's sdk are not inputs; the rest is."""
    service = dataclasses.replace(SERVICE, context=".")
    for rel in ("Dockerfile", "app.py", ".git/HEAD", "sdk/gen.py", "web/node_modules/x.js"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(rel)
    assert BuildInputs(service=service, root=tmp_path).files() == ["Dockerfile", "app.py"]


@pytest.mark.parametrize(
    "variant",
    [
        pytest.param({"build_args": {"MODE": "dev"}}, id="build-arg-value"),
        pytest.param({"build_args": {"MODE": "prod", "EXTRA": "1"}}, id="build-arg-added"),
        pytest.param({"target": "runtime"}, id="target"),
        pytest.param({"platforms": ("linux/arm64",)}, id="platform"),
        pytest.param({"platforms": ("linux/amd64", "linux/arm64")}, id="second-platform"),
        pytest.param({"secrets": {"npm": "env://NPM_TOKEN"}}, id="build-secret"),
    ],
)
def test_build_settings_change_the_key(tmp_path: Path, variant: dict[str, object]) -> None:
    """Build args, target, platforms and secret names are inputs of the build, so of the key."""
    root = make_tree(tmp_path)
    assert key(root, dataclasses.replace(SERVICE, **variant)) != key(root)  # type: ignore[arg-type]


def test_settings_that_do_not_reach_the_build_leave_the_key_alone(tmp_path: Path) -> None:
    """The image variable, smoke check and build-arg order are not build inputs."""
    root = make_tree(tmp_path)
    same = dataclasses.replace(SERVICE, image_variable="OTHER_IMAGE", build_args={"MODE": "prod"})
    assert key(root, same) == key(root)


def test_a_secret_value_source_does_not_change_the_key(tmp_path: Path) -> None:
    """Only the secret's id is hashed: where its value comes from is not part of the image."""
    root = make_tree(tmp_path)
    one = dataclasses.replace(SERVICE, secrets={"npm": "env://NPM_TOKEN"})
    other = dataclasses.replace(SERVICE, secrets={"npm": "file:///run/npm"})
    assert key(root, one) == key(root, other)


def test_the_executable_bit_changes_the_key(tmp_path: Path) -> None:
    """chmod +x on a file the build sees changes the key; chmod back restores it."""
    root = make_tree(tmp_path)
    script = root / "svc/app/main.py"
    before = key(root)
    script.chmod(0o755)
    assert key(root) != before
    script.chmod(0o644)
    assert key(root) == before


def test_a_symlink_is_hashed_by_its_target_path(tmp_path: Path) -> None:
    """A symlink counts as the link itself: repointing it changes the key, also for a link to a directory."""
    root = make_tree(tmp_path)
    link = root / "svc/current"
    link.symlink_to("app")
    first = key(root)
    assert "current" in BuildInputs(service=SERVICE, root=root).files()
    link.unlink()
    link.symlink_to("docs")
    assert key(root) != first


def test_the_dockerfile_is_always_part_of_the_build(tmp_path: Path) -> None:
    """Even when .dockerignore excludes it, the Dockerfile is hashed, as Docker always sends it."""
    root = make_tree(tmp_path, {"Dockerfile": "FROM a\n", "app.py": "x\n", ".dockerignore": "Dockerfile\n*.py\n"})
    assert BuildInputs(service=SERVICE, root=root).files() == [".dockerignore", "Dockerfile"]
    before = key(root)
    (root / "svc/Dockerfile").write_text("FROM b\n")
    assert key(root) != before


def test_the_dockerfile_specific_ignore_file_is_preferred(tmp_path: Path) -> None:
    """<Dockerfile>.dockerignore wins over .dockerignore, as Dagger and BuildKit pick it."""
    service = dataclasses.replace(SERVICE, dockerfile="Dockerfile.production")
    root = make_tree(
        tmp_path,
        {
            "Dockerfile.production": "FROM a\n",
            "Dockerfile.production.dockerignore": "tests\n",
            ".dockerignore": "src\n",
            "src/app.py": "x\n",
            "tests/test_app.py": "y\n",
        },
    )
    files = BuildInputs(service=service, root=root).files()
    assert files == [".dockerignore", "Dockerfile.production", "Dockerfile.production.dockerignore", "src/app.py"]
    before = key(root, service)
    (root / "svc/tests/test_app.py").write_text("changed\n")
    assert key(root, service) == before
    (root / "svc/src/app.py").write_text("changed\n")
    assert key(root, service) != before


def test_files_lists_what_the_build_sees(tmp_path: Path) -> None:
    """The file list is sorted, relative to the context, and leaves out everything ignored."""
    root = make_tree(tmp_path)
    assert BuildInputs(service=SERVICE, root=root).files() == [
        ".dockerignore",
        "Dockerfile",
        "README.md",
        "app/main.py",
        "app/util.py",
        "docs/guide.md",
    ]


def test_a_reinclude_below_an_ignored_directory_is_seen(tmp_path: Path) -> None:
    """'!dir/file' after 'dir' brings that one file back, and only it."""
    root = make_tree(
        tmp_path,
        {"Dockerfile": "FROM a\n", ".dockerignore": "vendor\n!vendor/keep.txt\n", "vendor/keep.txt": "k\n"},
    )
    make_tree(tmp_path, {"vendor/drop.txt": "d\n"})
    assert BuildInputs(service=SERVICE, root=root).files() == [".dockerignore", "Dockerfile", "vendor/keep.txt"]


def test_no_dockerignore_means_every_file(tmp_path: Path) -> None:
    """Without any ignore file the whole context is hashed."""
    root = make_tree(tmp_path, {"Dockerfile": "FROM a\n", "a/b/c.txt": "c\n", ".git/HEAD": "ref\n"})
    assert BuildInputs(service=SERVICE, root=root).files() == [".git/HEAD", "Dockerfile", "a/b/c.txt"]


# Docker's documented .dockerignore examples
# (https://docs.docker.com/build/concepts/context/#dockerignore-files), one row per claim.
DOCKER_EXAMPLES = [
    ("*/temp*", "somedir/temporary.txt", True),
    ("*/temp*", "somedir/temp", True),
    ("*/temp*", "temporary.txt", False),
    ("*/temp*", "a/b/temporary.txt", False),
    ("*/*/temp*", "somedir/subdir/temporary.txt", True),
    ("*/*/temp*", "somedir/temporary.txt", False),
    ("temp?", "tempa", True),
    ("temp?", "tempb", True),
    ("temp?", "temp", False),
    ("temp?", "tempab", False),
    ("temp?", "dir/tempa", False),
    ("**/*.go", "main.go", True),
    ("**/*.go", "cmd/tool/main.go", True),
    ("**/*.go", "main.gox", False),
    ("*.md\n!README*.md", "README.md", False),
    ("*.md\n!README*.md", "README-secret.md", False),
    ("*.md\n!README*.md", "CHANGES.md", True),
    ("*.md\n!README*.md\nREADME-secret.md", "README-secret.md", True),
    ("*.md\n!README*.md\nREADME-secret.md", "README-public.md", False),
    ("*.md\nREADME-secret.md\n!README*.md", "README-secret.md", False),
    ("# comment\n*/temp*", "# comment", False),
    ("/abs/path", "abs/path", True),
    ("./rel/../other", "other", True),
    ("dir/", "dir/file", True),
    ("dir", "dir/deep/er/file", True),
    ("dir/*", "dir", False),
    ("[abc].txt", "b.txt", True),
    ("[!abc].txt", "b.txt", False),
    ("[!abc].txt", "d.txt", True),
    ("\\*.txt", "*.txt", True),
    ("\\*.txt", "a.txt", False),
    ("  spaced.txt  ", "spaced.txt", True),
    ("**", "anything/at/all", True),
    ("a/**/b", "a/b", True),
    ("a/**/b", "a/x/y/b", True),
]


@pytest.mark.parametrize(
    ("patterns", "path", "ignored"),
    [pytest.param(p, f, i, id=f"{p.replace(chr(10), ' | ')} :: {f}") for p, f, i in DOCKER_EXAMPLES],
)
def test_dockerignore_matches_dockers_examples(patterns: str, path: str, ignored: bool) -> None:
    """DockerIgnore answers each of Docker's documented examples the way Docker does."""
    assert DockerIgnore(patterns).ignores(path) is ignored


def test_blank_lines_comments_and_dot_are_not_patterns() -> None:
    """Empty lines, '#' comments and '.' add no pattern."""
    assert DockerIgnore("\n# note\n   \n.\n/\n").patterns == []


def test_content_key_does_not_follow_links_out_of_the_context(tmp_path: Path) -> None:
    """A symlink pointing outside the context is hashed as a link: the outside file's content is not read."""
    root = make_tree(tmp_path)
    outside = tmp_path / "secret.txt"
    outside.write_text("one\n")
    (root / "svc/link.txt").symlink_to(os.path.relpath(outside, root / "svc"))
    before = key(root)
    outside.write_text("two\n")
    assert key(root) == before


def test_every_never_uploaded_pattern_ends_in_a_plain_name() -> None:
    """The key's fast path looks at the last path part first: a glob there would slip past it."""
    for pattern in SOURCE_IGNORE:
        assert re.fullmatch(r"(\*\*/)?[A-Za-z0-9_.-]+", pattern), pattern
