DOCUMENTATION = r"""
name: agented_backend_wheelhouse
short_description: Wheelhouses of the locked runtime dependencies and uv, one per target platform
description:
  - Reads uv.lock on the controller, walks the runtime dependencies of the project (no dev
    group) for each target platform, picks the best wheel of every locked package for that
    platform and fetches it, verified against the lock's SHA-256, together with a wheel of uv.
  - Wheels are cached by hash under the cache directory, and each wheelhouse is packed once into
    C(<cache>/wheelhouses/<id>.tar), where the id covers uv.lock, the platform and the uv
    version, so a
    second play with the same inputs fetches nothing.
  - A locked package without a wheel for a platform fails, naming the package and the platform.
options:
  _terms:
    description: A dict mapping each host to its platform, a dict with C(system) (Linux or
      Darwin), C(machine), C(python) (X.Y.Z) and C(libc) (glibc X.Y on Linux, the macOS version
      on Darwin).
    required: true
  lock:
    description: Path of uv.lock on the controller.
    required: true
  uv_version:
    description: Version of uv to include.
    required: true
  cache:
    description: Controller-side cache directory.
    required: true
  requirements:
    description: Name of the pinned requirements file inside the wheelhouse.
    required: true
  index:
    description: Simple index (PEP 691 JSON) uv's own wheel is looked up in.
    default: https://pypi.org/simple
"""

RETURN = r"""
_raw:
  description: One dict mapping each host to the wheelhouse of its platform, C(id), C(archive),
    C(requirements) (the name of the pinned requirements file inside it), C(wheels),
    C(platform) (its key, system-machine-cpXY-libc) and C(fetched_bytes) (bytes this call
    downloaded for that platform; hosts of one platform share one wheelhouse).
  type: list
  elements: dict
"""

import hashlib
import io
import json
import os
import tarfile
import tempfile
import tomllib
import urllib.request

from packaging import tags
from packaging.markers import Marker
from packaging.utils import canonicalize_name, parse_wheel_filename

try:
    from ansible.errors import AnsibleLookupError
    from ansible.plugins.lookup import LookupBase
except ImportError:  # imported by the unit tests without Ansible's plugin loader
    AnsibleLookupError = RuntimeError
    LookupBase = object

MANYLINUX_LEGACY = {(2, 17): "manylinux2014", (2, 12): "manylinux2010", (2, 5): "manylinux1"}


def platform_key(target):
    """A short name for a platform, used in messages, cache keys and host paths."""
    py = "".join(str(target["python"]).split(".")[:2])
    return f"{target['system'].lower()}-{target['machine']}-cp{py}-{target['libc']}"


def _platform_tags(target):
    machine = target["machine"]
    if target["system"] == "Linux":
        major, minor = (int(part) for part in str(target["libc"]).split(".")[:2])
        platforms = []
        for glibc_minor in range(minor, 4, -1):
            platforms.append(f"manylinux_{major}_{glibc_minor}_{machine}")
            legacy = MANYLINUX_LEGACY.get((major, glibc_minor))
            if legacy:
                platforms.append(f"{legacy}_{machine}")
        return platforms
    if target["system"] == "Darwin":
        version = tuple(int(part) for part in str(target["libc"]).split(".")[:2])
        arch = "arm64" if machine == "arm64" else "x86_64"
        return list(tags.mac_platforms(version=(*version, 0)[:2], arch=arch))
    raise AnsibleLookupError(f"no wheels are known for system {target['system']!r}")


def supported_tags(target):
    """Wheel tags the target accepts, best first (the order pip and uv prefer)."""
    python = tuple(int(part) for part in str(target["python"]).split(".")[:2])
    interpreter = f"cp{python[0]}{python[1]}"
    platforms = _platform_tags(target)
    return list(
        tags.cpython_tags(python_version=python, abis=[interpreter], platforms=platforms)
    ) + list(
        tags.compatible_tags(python_version=python, interpreter=interpreter, platforms=platforms)
    )


def marker_environment(target):
    system = target["system"]
    return {
        "implementation_name": "cpython",
        "implementation_version": str(target["python"]),
        "os_name": "posix",
        "platform_machine": target["machine"],
        "platform_python_implementation": "CPython",
        "platform_release": "",
        "platform_system": system,
        "platform_version": "",
        "python_full_version": str(target["python"]),
        "python_version": ".".join(str(target["python"]).split(".")[:2]),
        "sys_platform": {"Linux": "linux", "Darwin": "darwin"}[system],
        "extra": "",
    }


def runtime_packages(lock, target):
    """The locked packages the project needs at run time on the target, in lock order."""
    packages = lock["package"]
    by_name = {}
    for package in packages:
        by_name.setdefault(canonicalize_name(package["name"]), []).append(package)
    roots = [p for p in packages if set(p.get("source", {})) & {"virtual", "editable"}]
    if len(roots) != 1:
        raise AnsibleLookupError(
            "uv.lock holds no single project of its own (a virtual or editable source)"
        )
    environment = marker_environment(target)
    wanted, seen = [], set()
    pending = [(roots[0], ())]
    while pending:
        package, extras = pending.pop()
        dependencies = list(package.get("dependencies", []))
        for extra in extras:
            dependencies += package.get("optional-dependencies", {}).get(extra, [])
        for dependency in dependencies:
            marker = dependency.get("marker")
            if marker and not Marker(marker).evaluate(environment):
                continue
            candidates = by_name.get(canonicalize_name(dependency["name"]), [])
            if "version" in dependency:
                candidates = [c for c in candidates if c["version"] == dependency["version"]]
            if len(candidates) != 1:
                raise AnsibleLookupError(
                    f"uv.lock does not pin {dependency['name']} to one version"
                )
            child = candidates[0]
            key = (canonicalize_name(child["name"]), tuple(dependency.get("extra", [])))
            if key in seen:
                continue
            seen.add(key)
            if all(canonicalize_name(child["name"]) != name for name, _ in wanted):
                wanted.append((canonicalize_name(child["name"]), child))
            pending.append((child, tuple(dependency.get("extra", []))))
    return [package for _, package in wanted]


def best_wheel(name, version, wheels, target):
    ranking = {tag: rank for rank, tag in enumerate(supported_tags(target))}
    best = None
    for wheel in wheels:
        filename = wheel["url"].rsplit("/", 1)[-1]
        ranks = [ranking[tag] for tag in parse_wheel_filename(filename)[3] if tag in ranking]
        if ranks and (best is None or min(ranks) < best[0]):
            best = (min(ranks), filename, wheel)
    if best is None:
        raise AnsibleLookupError(
            f"{name} {version} (locked in uv.lock) has no wheel"
            f" for platform {platform_key(target)};"
            " build one, lock a version that has one, or set agented_backend_install_from: index"
        )
    return best[1], best[2]


def uv_wheels(index, version, cache):
    """uv's wheels from the index's simple JSON API (PEP 691), cached like every other download."""
    path = os.path.join(cache, "uv", f"{version}.json")
    fetched = 0
    if not os.path.exists(path):
        request = urllib.request.Request(  # noqa: S310 -- _open allows HTTPS only
            f"{index.rstrip('/')}/uv/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}
        )
        with _open(request, timeout=60) as response:
            body = response.read()
        fetched = len(body)
        files = [f for f in json.loads(body)["files"] if f["filename"].startswith(f"uv-{version}-")]
        _write_atomically(path, json.dumps(files).encode())
    with open(path, "rb") as handle:
        files = json.load(handle)
    wheels = [
        {
            "url": entry["url"],
            "hash": "sha256:" + entry["hashes"]["sha256"],
            "size": entry.get("size"),
        }
        for entry in files
        if entry["filename"].endswith(".whl")
    ]
    return wheels, fetched


def _open(request, timeout):
    url = request if isinstance(request, str) else request.full_url
    if not url.startswith("https://"):
        raise AnsibleLookupError(f"only HTTPS downloads are allowed, not {url}")
    return urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 -- HTTPS checked above


def _write_atomically(path, body):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=os.path.dirname(path), delete=False) as handle:
        handle.write(body)
    os.replace(handle.name, path)


def fetch(url, digest, cache):
    """The cached path of a wheel, downloaded and checked against its SHA-256 unless cached."""
    algorithm, expected = digest.split(":", 1)
    path = os.path.join(cache, "wheels", expected, url.rsplit("/", 1)[-1])
    if os.path.exists(path):
        return path, 0
    with _open(url, timeout=300) as response:
        body = response.read()
    if hashlib.new(algorithm, body).hexdigest() != expected:
        raise AnsibleLookupError(f"{url} does not match its hash in uv.lock ({digest})")
    _write_atomically(path, body)
    return path, len(body)


def build(target, lock_path, uv_version, cache, index, *, requirements_name):
    key = platform_key(target)
    with open(lock_path, "rb") as handle:
        lock_bytes = handle.read()
    wheelhouse_id = hashlib.sha256(
        b"\0".join([lock_bytes, key.encode(), uv_version.encode(), b"1"])
    ).hexdigest()[:16]
    archive = os.path.join(cache, "wheelhouses", f"{key}-{wheelhouse_id}.tar")
    result = {
        "id": wheelhouse_id,
        "platform": key,
        "archive": archive,
        "requirements": requirements_name,
    }
    if os.path.exists(archive):
        with tarfile.open(archive) as packed:
            result["wheels"] = sorted(name for name in packed.getnames() if name.endswith(".whl"))
        return dict(result, fetched_bytes=0)

    # Resolve everything before fetching anything, so a missing wheel fails without a download.
    lock = tomllib.loads(lock_bytes.decode())
    chosen = []
    for package in runtime_packages(lock, target):
        filename, wheel = best_wheel(
            package["name"], package["version"], package.get("wheels", []), target
        )
        chosen.append((package["name"], package["version"], filename, wheel))
    uv_candidates, fetched = uv_wheels(index, uv_version, cache)
    filename, wheel = best_wheel("uv", uv_version, uv_candidates, target)
    chosen.append(("uv", uv_version, filename, wheel))

    requirements = []
    os.makedirs(os.path.dirname(archive), exist_ok=True)
    with (
        tempfile.NamedTemporaryFile(dir=os.path.dirname(archive), delete=False) as handle,
        tarfile.open(fileobj=handle, mode="w") as packed,
    ):
        for name, version, filename, wheel in chosen:
            path, size = fetch(wheel["url"], wheel["hash"], cache)
            fetched += size
            packed.add(path, arcname=filename)
            if name != "uv":
                requirements.append(f"{name}=={version} --hash={wheel['hash']}\n")
        body = "".join(requirements).encode()
        info = tarfile.TarInfo(requirements_name)
        info.size = len(body)
        info.mode = 0o644
        packed.addfile(info, fileobj=io.BytesIO(body))
    os.replace(handle.name, archive)
    return dict(
        result, wheels=sorted(filename for _, _, filename, _ in chosen), fetched_bytes=fetched
    )


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        self.set_options(var_options=variables, direct=kwargs)
        cache = os.path.expanduser(self.get_option("cache"))
        targets = {}
        for term in terms:
            targets.update(term)
        by_platform, by_host = {}, {}
        for host, target in targets.items():
            key = platform_key(target)
            if key not in by_platform:
                by_platform[key] = dict(
                    build(
                        target,
                        self.get_option("lock"),
                        self.get_option("uv_version"),
                        cache,
                        self.get_option("index"),
                        requirements_name=self.get_option("requirements"),
                    ),
                    platform=key,
                )
            by_host[host] = by_platform[key]
        return [by_host]
