"""The one table that maps container images to local commands (pure: data in, data out).

There is no container engine in the lab: a node agent runs a container's process straight
from this checkout. Each image it knows is described the way its Dockerfile describes it —
ENTRYPOINT, CMD, ENV, USER — in *image terms*, plus ``commands``: which program names and paths
of the image exist here, and which local program stands in for each. Kubernetes' own rules
then decide the argv (``resolve``): ``command`` replaces the ENTRYPOINT, ``args`` replace the
CMD, and the first word of the result must be one of the image's ``commands``.

| repository            | entrypoint (CMD)             | stands in for                         |
|-----------------------|------------------------------|---------------------------------------|
| ``portico``           | ``portico`` (``--help``)     | the Dockerfile's image: the installed |
|                       |                              | ``portico`` entry point of this venv  |
| ``portico-lab/backend`` | ``python -m lab.backend``  | the lab's HTTP test app               |
| ``portico-lab/python``  | ``python``                 | a Python image for test snippets      |
| ``registry.k8s.io/e2e-  | ``/agnhost``               | Kubernetes' e2e test image: the       |
| test-images/agnhost``   |                            | subcommands the e2e suite uses, in    |
|                         |                            | ``lab.agnhost`` (``serve-hostname``)  |
| ``registry.k8s.io/      | ``/echo-basic`` (USER      | the Gateway API conformance suite's   |
| gateway-api/echo-basic``| 65532, distroless nonroot) | echo server, the real one: built from |
|                         |                            | its Go module by ``make binaries``    |
| ``registry.k8s.io/      | ``/coredns`` (as root: no  | the suite's UDP backend: a stand-in   |
| coredns/coredns``       | file capabilities here)    | (``lab.dnsstub``) that answers its    |
|                         |                            | Corefile's ``whoami`` zones and never |
|                         |                            | forwards (the lab sends nothing out)  |
| ``quay.io/metallb/      | ``/controller``, ``/speaker`` | MetalLB's controller and speaker,   |
| controller``, ``speaker``|                            | the real ones: built from            |
|                         |                            | ``go.universe.tf/metallb``            |

The tag and the digest are ignored (``portico:0.1.0``, ``portico@sha256:…`` are the same
image here); the chart's ``image.repository`` default (``charts/portico/values.yaml``) is
``PORTICO_REPOSITORY`` (a unit test keeps them equal). The Dockerfile's ``tini --`` is left out:
the node agent itself reaps the container's children. An image missing from the table fails
the container with ``ErrImageNotMapped`` (the kubelet's ``ErrImagePull``, for an image that
cannot exist here); a command missing from the image's ``commands`` with
``CreateContainerError`` — both name the image and this file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

TABLE_FILE = "lab/nodeagent/images.py"
PORTICO_REPOSITORY = "portico"  # charts/portico/values.yaml image.repository
REASON_NOT_MAPPED = "ErrImageNotMapped"
REASON_COMMAND = "CreateContainerError"

# The local programs an image's command names can stand for (see Toolbox.path).
PYTHON, PORTICO, SHELL, HAPROXY, EXABGP = "python", "portico", "sh", "haproxy", "exabgp"
AGNHOST = "agnhost"  # lab.agnhost, run by the venv's interpreter
AGNHOST_REPOSITORY = "registry.k8s.io/e2e-test-images/agnhost"
# Programs built from Go modules (lab.controlplane.binaries), found by the I/O shell; an image
# whose program is not built fails with ErrImageNotMapped and says `make binaries`.
ECHO_BASIC = "echo-basic"
ECHO_BASIC_REPOSITORY = "registry.k8s.io/gateway-api/echo-basic"
# MetalLB (the peer of the failover benchmark and of `portico migrate metallb`): its two
# programs, built from go.universe.tf/metallb at the pinned release.
METALLB_CONTROLLER = "metallb-controller"
METALLB_SPEAKER = "metallb-speaker"
METALLB_CONTROLLER_REPOSITORY = "quay.io/metallb/controller"
METALLB_SPEAKER_REPOSITORY = "quay.io/metallb/speaker"
BUILT = (ECHO_BASIC, METALLB_CONTROLLER, METALLB_SPEAKER)
DNSSTUB = "dnsstub"  # lab.dnsstub, run by the system's interpreter
SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's python3 (3.11 on bookworm)
COREDNS_REPOSITORY = "registry.k8s.io/coredns/coredns"
DISTROLESS_NONROOT = (65532, 65532)  # gcr.io/distroless/static:nonroot's USER


@dataclass(frozen=True)
class Toolbox:
    """Where the local programs are; the I/O shell fills it in (from ``sys.executable``)."""

    python: str  # the venv's interpreter
    bin_dir: str  # the venv's bin directory (portico, exabgp live there)
    repo: str  # the checkout (lab images import ``lab.*`` from it)
    built: tuple[tuple[str, str], ...] = ()  # (BUILT tool, path) of the programs built here

    def path(self, tool: str) -> str:
        return {
            PYTHON: self.python,
            PORTICO: f"{self.bin_dir}/portico",
            EXABGP: f"{self.bin_dir}/exabgp",
            SHELL: "/bin/sh",
            HAPROXY: "/usr/sbin/haproxy",
        }[tool]

    def argv(self, tool: str) -> tuple[str, ...]:
        """The words that run ``tool``: its path, or for a tool written as a lab module
        the interpreter and the module."""
        if tool == AGNHOST:
            return (self.python, "-m", "lab.agnhost")
        if tool == DNSSTUB:
            # The system interpreter (lab.dnsstub is standard library only): the suite's
            # pod mounts its Corefile over /root, which would hide an interpreter living
            # there (pyenv's, this venv's base).
            return (SYSTEM_PYTHON, "-m", "lab.dnsstub")
        if tool in BUILT:
            return (dict(self.built)[tool],)
        return (self.path(tool),)

    def has(self, tool: str) -> bool:
        return tool not in BUILT or tool in dict(self.built)


@dataclass(frozen=True)
class Image:
    repository: str
    entrypoint: tuple[str, ...]  # ENTRYPOINT, image terms
    cmd: tuple[str, ...] = ()  # CMD, image terms
    env: tuple[tuple[str, str], ...] = ()  # ENV
    user: tuple[int, int] = (0, 0)  # USER uid:gid
    commands: Mapping[str, str] = field(default_factory=dict)  # image name/path -> tool
    lab: bool = False  # runs lab code: PYTHONPATH is the checkout


_PY_COMMANDS = {"python": PYTHON, "python3": PYTHON, "/usr/local/bin/python": PYTHON,
                "/usr/local/bin/python3": PYTHON, "/usr/bin/python3": PYTHON,
                "sh": SHELL, "/bin/sh": SHELL}

IMAGES: dict[str, Image] = {i.repository: i for i in (
    # Dockerfile: ENTRYPOINT ["/usr/bin/tini", "--", "portico"], CMD ["--help"],
    # ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1, USER 10001:10001; haproxy from Debian,
    # exabgp installed with the wheel.
    Image(PORTICO_REPOSITORY, entrypoint=("portico",), cmd=("--help",),
          env=(("PYTHONDONTWRITEBYTECODE", "1"), ("PYTHONUNBUFFERED", "1")),
          user=(10001, 10001),
          commands={"portico": PORTICO, "/usr/local/bin/portico": PORTICO,
                    "exabgp": EXABGP, "/usr/local/bin/exabgp": EXABGP,
                    "haproxy": HAPROXY, "/usr/sbin/haproxy": HAPROXY, **_PY_COMMANDS}),
    Image("portico-lab/backend", entrypoint=("python", "-m", "lab.backend"),
          env=(("PYTHONUNBUFFERED", "1"),), commands=_PY_COMMANDS, lab=True),
    Image("portico-lab/python", entrypoint=("python",),
          env=(("PYTHONUNBUFFERED", "1"),), commands=_PY_COMMANDS, lab=True),
    # Kubernetes' e2e test image (ENTRYPOINT ["/agnhost"], no USER): the e2e suite's web app
    # (``serve-hostname``); lab.agnhost lists the subcommands it implements.
    Image(AGNHOST_REPOSITORY, entrypoint=("/agnhost",),
          env=(("PYTHONUNBUFFERED", "1"),),
          commands={"/agnhost": AGNHOST, "agnhost": AGNHOST}, lab=True),
    # docker/Dockerfile.echo-basic of sigs.k8s.io/gateway-api: FROM distroless/static:nonroot,
    # ENTRYPOINT ["/echo-basic"], USER nonroot. Its ports and modes come from the environment
    # the suite's manifests set (HTTP_PORT 3000, H2C_PORT 3001, HTTPS_PORT 8443 by default;
    # GRPC_ECHO_SERVER, TCP_ECHO_SERVER, TLS_SERVER_CERT/_PRIVKEY from files of a Secret).
    Image(ECHO_BASIC_REPOSITORY, entrypoint=("/echo-basic",), user=DISTROLESS_NONROOT,
          commands={"/echo-basic": ECHO_BASIC, "echo-basic": ECHO_BASIC}),
    # coredns's image: ENTRYPOINT ["/coredns"], USER nonroot (distroless). The suite runs it
    # with `-conf /root/Corefile` for its UDPRoute test; the stand-in serves that Corefile's
    # `whoami` zones on UDP and answers everything else REFUSED instead of forwarding.
    # The real image is nonroot and binds port 53 through a file capability on /coredns; a
    # Python stand-in cannot carry one, so it runs as root with the capabilities the pod
    # keeps (the suite's pod: drop ALL, add NET_BIND_SERVICE).
    Image(COREDNS_REPOSITORY, entrypoint=("/coredns",),
          env=(("PYTHONUNBUFFERED", "1"),),
          commands={"/coredns": DNSSTUB, "coredns": DNSSTUB}, lab=True),
    # MetalLB's controller/Dockerfile and speaker/Dockerfile: FROM distroless/static:latest
    # (USER root; the controller's pod sets runAsUser 65534), ENTRYPOINT ["/controller"] and
    # ["/speaker"]. The real programs, built from the module (`make binaries`).
    Image(METALLB_CONTROLLER_REPOSITORY, entrypoint=("/controller",),
          commands={"/controller": METALLB_CONTROLLER, "controller": METALLB_CONTROLLER}),
    Image(METALLB_SPEAKER_REPOSITORY, entrypoint=("/speaker",),
          commands={"/speaker": METALLB_SPEAKER, "speaker": METALLB_SPEAKER}),
)}


@dataclass(frozen=True)
class Resolved:
    image: Image
    argv: tuple[str, ...]  # local paths
    env: tuple[tuple[str, str], ...]  # the image's ENV (+ PATH, PYTHONPATH)


@dataclass(frozen=True)
class NotMapped:
    reason: str
    message: str


def repository(image: str) -> str:
    """``registry:5000/x/portico:1.0@sha256:…`` -> ``registry:5000/x/portico``: a tag is a
    colon after the last slash (a registry port is a colon before it)."""
    name = image.split("@", 1)[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    return name[:colon] if colon > slash else name


def lookup(image: str) -> Image | NotMapped:
    entry = IMAGES.get(repository(image))
    if entry is None:
        known = ", ".join(sorted(IMAGES))
        return NotMapped(REASON_NOT_MAPPED,
                         f'image "{image}" is not in the node agent\'s image table '
                         f"({TABLE_FILE}); mapped repositories: {known}")
    return entry


def local_argv(entry: Image, image: str, argv: tuple[str, ...],
               box: Toolbox) -> tuple[str, ...] | NotMapped:
    """``argv`` in image terms -> local paths (its first word through ``commands``)."""
    if not argv:
        return NotMapped(REASON_COMMAND, f'image "{image}" has no entrypoint and the '
                                         "container gives no command")
    tool = entry.commands.get(argv[0])
    if tool is None:
        return NotMapped(REASON_COMMAND,
                         f'command "{argv[0]}" does not exist in image "{image}" as the node '
                         f"agent maps it ({TABLE_FILE}); known: "
                         f"{', '.join(sorted(entry.commands))}")
    if not box.has(tool):
        return NotMapped(REASON_NOT_MAPPED,
                         f'image "{image}" runs {tool}, which is not built on this machine: '
                         "run `make binaries` (lab/controlplane/binaries.py)")
    return (*box.argv(tool), *argv[1:])


def resolve(image: str, command: list[str] | None, args: list[str] | None,
            box: Toolbox) -> Resolved | NotMapped:
    """The container's argv by Kubernetes' rules (``command`` replaces ENTRYPOINT, ``args``
    replace CMD), in local paths, with the image's environment."""
    entry = lookup(image)
    if isinstance(entry, NotMapped):
        return entry
    if command:
        words = (*command, *(args or ()))
    elif args:
        words = (*entry.entrypoint, *args)
    else:
        words = (*entry.entrypoint, *entry.cmd)
    argv = local_argv(entry, image, tuple(words), box)
    if isinstance(argv, NotMapped):
        return argv
    return Resolved(entry, argv, image_env(entry, box))


def image_env(entry: Image, box: Toolbox) -> tuple[tuple[str, str], ...]:
    # PATH as the image has it, with the venv's bin first: that is where the image's
    # /usr/local/bin programs (portico, exabgp, python) are here.
    env = [("PATH", f"{box.bin_dir}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:"
                    "/sbin:/bin"), *entry.env]
    if entry.lab:
        env.append(("PYTHONPATH", box.repo))
    return tuple(env)
