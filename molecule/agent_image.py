"""Build the reference agent's Docker image from what this machine can reach, with no registry pulls.

Two images, each tagged by a hash of its content so a rebuild happens only after a change:

- `molecule-agent-base:<hash>`: a minimal Debian (debootstrap from the Debian mirror) with python3,
  imported straight into the daemon.
- `molecule-agent:<hash>`: the base plus the project's own wheel and the agent's dependencies, copied
  from this environment's installed distributions (same CPython minor version as Debian's python3).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from importlib import metadata
from pathlib import Path

import docker
from docker.errors import APIError, ImageNotFound

from config.settings import REPO_ROOT
from molecule.file_lock import exclusive

log = logging.getLogger("molecule.agent_image")

SUITE = "bookworm"
MIRROR = os.environ.get("DEBIAN_MIRROR", "http://deb.debian.org/debian")
PACKAGES = ("python3",)
BASE_REPOSITORY = "molecule-agent-base"
REPOSITORY = "molecule-agent"
_CONTENT_TAG = re.compile(r"[0-9a-f]{12}")
# What `python -m agent` imports beyond the standard library.
AGENT_REQUIREMENTS = ("fastapi", "uvicorn", "httpx")
_TRIM = (
    "usr/share/doc",
    "usr/share/man",
    "usr/share/locale",
    "usr/share/info",
    "var/cache/apt",
    "var/lib/apt/lists",
)

_SOURCE_IGNORE = shutil.ignore_patterns(
    ".git", ".venv", ".molecule", "build", "*.egg-info", "__pycache__", ".*_cache", "tests", "bench"
)

AGENT_UID = 10001  # the agent never runs as root; fresh volumes take these owners from the image

DOCKERFILE = f"""\
FROM {{base}}
COPY site /opt/molecule/site
RUN install -d -o {AGENT_UID} -g {AGENT_UID} -m 0755 /configs /workspace
ENV PYTHONPATH=/opt/molecule/site PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 AGENT_HOST=0.0.0.0 \\
    HOME=/workspace
USER {AGENT_UID}:{AGENT_UID}
WORKDIR /workspace
CMD ["python3", "-m", "agent"]
"""


class ImageBuildError(RuntimeError):
    pass


def _hash(*parts: bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(hashlib.sha256(part).digest())
    return digest.hexdigest()[:12]


def _exists(client: docker.DockerClient, ref: str) -> bool:
    try:
        client.images.get(ref)
        return True
    except ImageNotFound:
        return False


def ensure_base_image(client: docker.DockerClient) -> str:
    ref = f"{BASE_REPOSITORY}:{_hash(SUITE.encode(), MIRROR.encode(), ' '.join(PACKAGES).encode())}"
    if _exists(client, ref):
        return ref
    debootstrap = shutil.which("debootstrap") or "/usr/sbin/debootstrap"
    if not Path(debootstrap).exists():
        raise ImageBuildError("debootstrap is not installed (apt-get install -y debootstrap)")
    with tempfile.TemporaryDirectory(prefix="molecule-rootfs-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        log.info("debootstrap %s into %s (about a minute)", SUITE, rootfs)
        cmd = [
            debootstrap,
            "--variant=minbase",
            f"--include={','.join(PACKAGES)}",
            SUITE,
            str(rootfs),
            MIRROR,
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise ImageBuildError(f"debootstrap failed: {done.stdout[-2000:]}{done.stderr[-2000:]}")
        for rel in _TRIM:
            shutil.rmtree(rootfs / rel, ignore_errors=True)
        archive = Path(tmp) / "rootfs.tar"
        with tarfile.open(archive, "w") as tar:
            tar.add(rootfs, arcname=".")
        repository, tag = ref.split(":")
        client.api.import_image(src=str(archive), repository=repository, tag=tag)
    return ref


def _distributions(names: tuple[str, ...]) -> list[metadata.Distribution]:
    """The named distributions and everything they require (no extras), as installed here."""
    seen: dict[str, metadata.Distribution] = {}
    todo = list(names)
    while todo:
        name = re.split(r"[\s;<>=!~\[(]", todo.pop(), maxsplit=1)[0].lower().replace("_", "-")
        if name in seen:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # a requirement for another platform or Python version
        seen[name] = dist
        todo.extend(req for req in dist.requires or [] if "extra ==" not in req)
    return list(seen.values())


def _copy_site(site: Path) -> None:
    for dist in _distributions(AGENT_REQUIREMENTS):
        for file in dist.files or []:
            source = Path(str(dist.locate_file(file)))
            if file.parts[0] == ".." or "__pycache__" in file.parts or not source.is_file():
                continue
            target = site / file
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


def _install_own_wheel(site: Path, work: Path) -> None:
    # Built from a copy: an in-tree build would leave build/ behind in the checkout.
    source = work / "source"
    shutil.copytree(REPO_ROOT, source, ignore=_SOURCE_IGNORE)
    wheels = work / "wheels"
    build = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(wheels), str(source)]
    done = subprocess.run(build, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise ImageBuildError(f"building the project's wheel failed: {done.stderr[-2000:]}")
    (wheel,) = wheels.glob("molecule-*.whl")
    install = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-compile"]
    done = subprocess.run(
        [*install, "--target", str(site), str(wheel)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise ImageBuildError(f"installing the project's wheel failed: {done.stderr[-2000:]}")
    shutil.rmtree(site / "bin", ignore_errors=True)


def _tree_hash(root: Path) -> bytes:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        # The wheel's RECORD and build metadata vary between builds of identical code.
        if path.name in ("RECORD", "direct_url.json", "INSTALLER", "REQUESTED"):
            continue
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.digest()


def ensure_agent_image(client: docker.DockerClient | None = None) -> str:
    """The tag of an image running the reference agent, built only if this content is new."""
    # One builder per host at a time: the second waits, then finds the first one's image.
    with exclusive(Path(tempfile.gettempdir()) / "molecule-agent-image.lock"):
        return _ensure_agent_image(client or docker.from_env())


def _ensure_agent_image(client: docker.DockerClient) -> str:
    base = ensure_base_image(client)
    with tempfile.TemporaryDirectory(prefix="molecule-image-") as tmp:
        context = Path(tmp) / "context"
        site = context / "site"
        site.mkdir(parents=True)
        _copy_site(site)
        _install_own_wheel(site, Path(tmp))
        dockerfile = DOCKERFILE.format(base=base)
        ref = f"{REPOSITORY}:{_hash(dockerfile.encode(), _tree_hash(site))}"
        if _exists(client, ref):
            return ref
        (context / "Dockerfile").write_text(dockerfile)
        log.info("building %s", ref)
        client.images.build(path=str(context), tag=ref, rm=True, pull=False)
    _prune_superseded(client, ref)
    return ref


def _prune_superseded(client: docker.DockerClient, keep: str) -> None:
    """Drop the content-hash tags of earlier builds, so rebuilds do not pile up. Other tags (such as
    `:local`) keep their image, and an image a container still uses is left alone."""
    for image in client.images.list(name=REPOSITORY):
        for tag in image.tags:
            repository, _, name = tag.rpartition(":")
            if repository != REPOSITORY or tag == keep or not _CONTENT_TAG.fullmatch(name):
                continue
            try:
                client.images.remove(tag)
                log.info("removed superseded %s", tag)
            except APIError as exc:  # in use by a container: it goes with a later build
                log.info("kept %s: %s", tag, exc.explanation or exc)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    print(ensure_agent_image())


if __name__ == "__main__":
    main()
