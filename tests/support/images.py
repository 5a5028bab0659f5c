"""Synthetic but well-formed images, pushed through RegistryClient.

An image is a real gzip'd tar layer, a config whose ``rootfs.diff_ids`` match
it, and a manifest; an index adds one image per platform (and, on request,
buildx-style attestation manifests). OCI and Docker v2 media types are both
available, so byte-exact copies can be checked for all four manifest types.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from collections.abc import Sequence
from typing import Literal

from pipeline.registry import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    Manifest,
    RegistryClient,
    sha256_digest,
)

Flavour = Literal["oci", "docker"]

_CONFIG_TYPE = {
    "oci": "application/vnd.oci.image.config.v1+json",
    "docker": "application/vnd.docker.container.image.v1+json",
}
_LAYER_TYPE = {
    "oci": "application/vnd.oci.image.layer.v1.tar+gzip",
    "docker": "application/vnd.docker.image.rootfs.diff.tar.gzip",
}
_MANIFEST_TYPE = {"oci": OCI_MANIFEST, "docker": DOCKER_MANIFEST}
_INDEX_TYPE = {"oci": OCI_INDEX, "docker": DOCKER_LIST}


def layer(payload: bytes, name: str = "app/payload.bin") -> tuple[bytes, str]:
    """A gzip'd tar holding one file; returns (blob, diff_id of the plain tar)."""
    plain = io.BytesIO()
    with tarfile.open(fileobj=plain, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        info.size = len(payload)
        info.mode = 0o644
        tar.addfile(info, io.BytesIO(payload))
    tar_bytes = plain.getvalue()
    # mtime=0 keeps the blob, and so every digest, the same on every run.
    return gzip.compress(tar_bytes, mtime=0), "sha256:" + hashlib.sha256(tar_bytes).hexdigest()


def _encode(document: dict[str, object]) -> bytes:
    return json.dumps(document, indent=2).encode()


def build_image(
    layers: Sequence[tuple[bytes, str]], *, platform: str = "linux/amd64", flavour: Flavour = "oci"
) -> tuple[bytes, Manifest]:
    """The config blob and manifest for ``layers`` (from ``layer``)."""
    os_name, _, arch = platform.partition("/")
    config = _encode(
        {
            "architecture": arch,
            "os": os_name,
            "config": {"Cmd": ["/app/run"]},
            "rootfs": {"type": "layers", "diff_ids": [diff_id for _, diff_id in layers]},
            "history": [{"created_by": "tests.support.images"} for _ in layers],
        }
    )
    manifest = {
        "schemaVersion": 2,
        "mediaType": _MANIFEST_TYPE[flavour],
        "config": {"mediaType": _CONFIG_TYPE[flavour], "digest": sha256_digest(config), "size": len(config)},
        "layers": [
            {"mediaType": _LAYER_TYPE[flavour], "digest": sha256_digest(blob), "size": len(blob)} for blob, _ in layers
        ],
    }
    return config, Manifest.from_bytes(_encode(manifest), _MANIFEST_TYPE[flavour])


async def push_image(
    client: RegistryClient,
    repo: str,
    tag: str | None,
    *,
    payload: bytes = b"hello from a test image\n",
    platform: str = "linux/amd64",
    flavour: Flavour = "oci",
) -> str:
    """Push config, one layer and the manifest (at ``tag``, or by digest if None); return the digest."""
    blob = layer(payload)
    config, manifest = build_image([blob], platform=platform, flavour=flavour)
    await client.push_blob(repo, blob[0])
    await client.push_blob(repo, config)
    return await client.put_manifest(repo, tag or manifest.digest, manifest)


async def push_referrer(client: RegistryClient, repo: str, subject: str, tag: str | None = None) -> str:
    """A signature-like manifest about ``subject``: with an OCI 1.1 ``subject`` field, or (given a
    cosign-style ``tag``) found by that tag alone. Pushed by digest unless tagged; returns its digest."""
    blob = layer(f"signature of {subject}".encode(), "signature.json")
    config, image = build_image([blob])
    document = json.loads(image.data)
    if tag is None:
        document["subject"] = {"mediaType": OCI_MANIFEST, "digest": subject, "size": 0}
    manifest = Manifest.from_bytes(_encode(document), OCI_MANIFEST)
    await client.push_blob(repo, blob[0])
    await client.push_blob(repo, config)
    return await client.put_manifest(repo, tag or manifest.digest, manifest)


def _attestation(subject: str) -> tuple[bytes, bytes, Manifest]:
    """A buildx-style attestation manifest: an in-toto layer about ``subject``."""
    statement = _encode(
        {"_type": "https://in-toto.io/Statement/v0.1", "subject": [{"digest": {"sha256": subject[7:]}}]}
    )
    config = _encode({"architecture": "unknown", "os": "unknown", "rootfs": {"type": "layers", "diff_ids": []}})
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": _CONFIG_TYPE["oci"], "digest": sha256_digest(config), "size": len(config)},
        "layers": [
            {
                "mediaType": "application/vnd.in-toto+json",
                "digest": sha256_digest(statement),
                "size": len(statement),
                "annotations": {"in-toto.io/predicate-type": "https://slsa.dev/provenance/v0.2"},
            }
        ],
    }
    return statement, config, Manifest.from_bytes(_encode(manifest), OCI_MANIFEST)


async def push_index(
    client: RegistryClient,
    repo: str,
    tag: str | None,
    platforms: Sequence[str] = ("linux/amd64", "linux/arm64"),
    *,
    payload: bytes = b"multi-platform test image\n",
    flavour: Flavour = "oci",
    attestations: bool = False,
) -> tuple[str, list[str]]:
    """Push one image per platform, untagged, then an index (OCI) or manifest list (Docker).

    Returns (index digest, child digests in index order). ``attestations`` (OCI
    only) adds one attestation manifest per platform, as buildx does.
    """
    entries: list[dict[str, object]] = []
    for platform in platforms:
        blob = layer(payload + platform.encode())
        config, manifest = build_image([blob], platform=platform, flavour=flavour)
        await client.push_blob(repo, blob[0])
        await client.push_blob(repo, config)
        await client.put_manifest(repo, manifest.digest, manifest)
        os_name, _, arch = platform.partition("/")
        entries.append(
            {
                "mediaType": manifest.media_type,
                "digest": manifest.digest,
                "size": len(manifest.data),
                "platform": {"architecture": arch, "os": os_name},
            }
        )
    if attestations and flavour == "oci":
        for entry in list(entries):
            statement, config, manifest = _attestation(str(entry["digest"]))
            await client.push_blob(repo, statement)
            await client.push_blob(repo, config)
            await client.put_manifest(repo, manifest.digest, manifest)
            entries.append(
                {
                    "mediaType": OCI_MANIFEST,
                    "digest": manifest.digest,
                    "size": len(manifest.data),
                    "platform": {"architecture": "unknown", "os": "unknown"},
                    "annotations": {
                        "vnd.docker.reference.type": "attestation-manifest",
                        "vnd.docker.reference.digest": entry["digest"],
                    },
                }
            )
    index = Manifest.from_bytes(
        _encode({"schemaVersion": 2, "mediaType": _INDEX_TYPE[flavour], "manifests": entries}), _INDEX_TYPE[flavour]
    )
    digest = await client.put_manifest(repo, tag or index.digest, index)
    return digest, [str(entry["digest"]) for entry in entries]
