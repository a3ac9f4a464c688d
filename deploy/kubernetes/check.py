#!/usr/bin/env python3
"""Checks the Kubernetes manifests (deploy/kubernetes) without a cluster: no cluster and no
network are reachable from the machines the tests run on.

    python3 deploy/kubernetes/check.py        (scripts/test runs it)

1. Every manifest, and the ConfigMap kustomize generates from base/echotrace.toml, against the
   JSON schemas of Kubernetes KUBERNETES_VERSION in strict mode (an unknown or misspelt field is an
   error), with the schemas the PyPI package kubernetes-validate bundles (scripts/requirements/
   test.txt): nothing is downloaded.
2. The kustomizations: each lists files that exist, every manifest is listed by one, and they use
   only what this check renders (resources, namespace, configMapGenerator, images, and patches:
   JSON 6902 ones, applied with the PyPI package jsonpatch, and `$patch: delete`); every patch
   applies.
3. base/echotrace.toml: every key is one of deploy/echotrace.toml's (echotrace refuses unknown
   keys at start-up).
Then, for each shape (one-process/, staged/, staged-standbys/, staged-scorer/: the resources its kustomization
renders):
4. Every ECHOTRACE_* variable names a configuration section and key, with a valid role or device;
   the files of ECHOTRACE_CONFIG exist in the image or a mounted ConfigMap. Every image a container
   names is built by a Dockerfile of the repository (IMAGES) that copies what it needs from the
   repository, the configuration to IMAGE_CONFIG and the binary to the container's command, and
   the CUDA image builds with --features cuda and names ONNX Runtime's library.
5. Every probe points at a port its container declares, and that port is the one the process
   listens on (http.listen, query.listen); `run` containers probe /healthz and /readyz.
6. Every Service selects a workload's pods, and its target ports are declared there.
7. Every PodDisruptionBudget selects a workload's pods, and no pod has two; every Deployment and
   StatefulSet has one, except detect standbys, which must have none (12).
8. The other references resolve: workload selectors, StatefulSets' governing Services, ConfigMap
   and claim volumes (a StatefulSet's claim templates or a PersistentVolumeClaim), volume mounts,
   affinity and spread selectors, resourceFieldRefs.
9. The token files the configuration names are mounted from Secrets where they are read; no
   token or password is written in a manifest; every Secret key read is documented in README.md.
10. Every pod meets the "restricted" Pod Security profile the namespace enforces, with a
   read-only root filesystem, and every container has CPU and memory requests and limits.
11. The roles: one replica for each stateful writer (whole, detect, gate), except detect standbys;
   in the staged shapes, prepare and detect in different consumer groups, and prepare on the GPU
   with embed.device = "cuda".
12. Detect standbys (staged-standbys): more than one replica, created in parallel and updated on
   delete (a standby is never ready, which stalls OrderedReady and RollingUpdate), output.dir and
   state.dir on ReadWriteMany claims every pod shares, one pod per node, no disruption budget.
13. The scorer apart (staged-scorer): score pods and one gate only where the detect stage routes to
   them (stage.score_stage); one score replica per owner (alerting.cascade_owners, the same in every
   role), each the owner of its pod index; the gate's output.dir on the detect pods' datasets claim.

Prints one line per check and `N passed, M failed`; exits non-zero when any check fails.
"""

import copy
import re
import sys
import tomllib
from pathlib import Path

import jsonpatch
import jsonpointer
import kubernetes_validate.utils as kv
import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
# Each shape's folder and the roles its `run` containers take.
SHAPES = {
    "one-process": {"whole"},
    "staged": {"prepare", "detect", "link"},
    "staged-standbys": {"prepare", "detect", "link"},
    "staged-scorer": {"prepare", "detect", "link", "score", "gate"},
}
# The shapes whose detect StatefulSet runs standbys (check 12); elsewhere it is one replica.
STANDBY_SHAPES = {"staged-standbys", "staged-scorer"}
# The oldest Kubernetes these manifests are for: every field they use is GA there
# (persistentVolumeClaimRetentionPolicy since 1.32, unhealthyPodEvictionPolicy since 1.31).
KUBERNETES_VERSION = "1.32.0"
# Keys the configuration has beyond those deploy/echotrace.toml sets or shows commented out.
EXTRA_KEYS = ("stage.role", "kafka.prepared_topic", "embed.device")
# ECHOTRACE_ variables that are not configuration keys (deploy/echotrace.toml's header).
NON_KEY_VARIABLES = {"ECHOTRACE_CONFIG", "ECHOTRACE_LOG"}
ROLES = {"whole", "prepare", "detect", "link", "score", "gate"}
DEVICES = {"cpu", "cuda"}
# Where the images put deploy/echotrace.toml.
IMAGE_CONFIG = "/etc/echotrace/echotrace.toml"
# The images the manifests name, by the Dockerfile (from the repository's root) that builds each.
IMAGES = {
    "echotrace": REPO / "deploy" / "compose" / "Dockerfile",
    "echotrace-cuda": HERE / "Dockerfile.cuda",
}
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob"}
SECRET_NAMES = re.compile(r"TOKEN|PASSWORD|SECRET|REVIEWERS|PROPERTIES")


# --- reading ---------------------------------------------------------------------------------

class Shape:
    """What one kustomization renders: its resources (with the file each came from), the
    ConfigMaps its generators make, and the kustomization files read."""

    def __init__(self) -> None:
        self.resources: list[tuple[str, dict]] = []
        self.problems: list[str] = []
        self.kustomizations: list[Path] = []
        self.files: set[Path] = set()


KNOWN_KUSTOMIZE_FIELDS = {"apiVersion", "kind", "namespace", "resources", "configMapGenerator", "images",
                          "patches"}
# The fields of a patch's target this check matches on (kustomize has selectors too).
KNOWN_TARGET_FIELDS = {"kind", "name", "namespace"}


def rel(path: Path) -> str:
    return str(path.relative_to(HERE))


def load_documents(path: Path) -> list[dict]:
    # PyYAML reads YAML 1.1 as kubectl does (0440 is octal there).
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def render(folder: Path, shape: Shape | None = None) -> Shape:
    """Resolves a kustomization the way kustomize does for the fields in KNOWN_KUSTOMIZE_FIELDS."""
    shape = shape or Shape()
    path = folder / "kustomization.yaml"
    shape.kustomizations.append(path)
    kustomization = yaml.safe_load(path.read_text())
    unknown = set(kustomization) - KNOWN_KUSTOMIZE_FIELDS
    if unknown:
        shape.problems.append(f"{rel(path)}: check.py does not render {sorted(unknown)}; extend it")
    namespace = kustomization.get("namespace")
    start = len(shape.resources)
    for entry in kustomization.get("resources", []):
        target = (folder / entry).resolve()
        if target.is_dir():
            render(target, shape)
        elif target.is_file():
            shape.files.add(target)
            shape.resources += [(rel(target), doc) for doc in load_documents(target)]
        else:
            shape.problems.append(f"{rel(path)}: resource {entry} does not exist")
    for generator in kustomization.get("configMapGenerator", []):
        data = {}
        for name in generator.get("files", []):
            source = folder / name
            if not source.is_file():
                shape.problems.append(f"{rel(path)}: configMapGenerator file {name} does not exist")
                continue
            shape.files.add(source.resolve())
            data[Path(name).name] = source.read_text()
        shape.resources.append((f"{rel(path)} configMapGenerator", {
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": generator["name"], **({"namespace": namespace} if namespace else {})},
            "data": data,
        }))
    if namespace:
        for source, doc in shape.resources[start:]:
            if doc.get("kind") == "Namespace":
                continue
            declared = doc.get("metadata", {}).get("namespace")
            if declared not in (None, namespace):
                shape.problems.append(f"{source}: {doc['kind']}/{doc['metadata']['name']} names namespace "
                                      f"{declared}, its kustomization {namespace}")
    apply_patches(folder, path, kustomization.get("patches", []), shape, start)
    return shape


def apply_patches(folder: Path, path: Path, patches: list[dict], shape: Shape, start: int) -> None:
    """kustomize's `patches` over the resources this kustomization rendered (from index start):
    JSON 6902 patches (a list of operations, with a target), and strategic-merge patches that
    only delete a resource (`$patch: delete`). Others are reported, not guessed at."""
    for entry in patches:
        if "path" in entry:
            source = folder / entry["path"]
            if not source.is_file():
                shape.problems.append(f"{rel(path)}: patch {entry['path']} does not exist")
                continue
            shape.files.add(source.resolve())
            where, patch = rel(source), yaml.safe_load(source.read_text())
        else:
            where, patch = f"{rel(path)} inline patch", yaml.safe_load(entry.get("patch", ""))
        target = entry.get("target", {})
        if set(target) - KNOWN_TARGET_FIELDS:
            shape.problems.append(f"{where}: check.py matches targets by {sorted(KNOWN_TARGET_FIELDS)} only, "
                                  f"not {sorted(set(target) - KNOWN_TARGET_FIELDS)}; extend it")
            continue
        if isinstance(patch, list):
            if not target:
                shape.problems.append(f"{where}: a JSON 6902 patch needs a target")
                continue
            wanted = target
        elif isinstance(patch, dict) and patch.get("$patch") == "delete":
            wanted = {"kind": patch.get("kind"), **{key: value for key, value in patch.get("metadata", {}).items()
                                                    if key in ("name", "namespace")}}
        else:
            shape.problems.append(f"{where}: check.py renders JSON 6902 patches and `$patch: delete` only; "
                                  f"extend it")
            continue
        hits = [index for index in range(start, len(shape.resources))
                if all(shape.resources[index][1].get("kind") == value if key == "kind"
                       else shape.resources[index][1].get("metadata", {}).get(key) == value
                       for key, value in wanted.items())]
        if not hits:
            shape.problems.append(f"{where}: patches {wanted}, which no resource of {rel(path)} is")
        for index in reversed(hits):
            resource_source, doc = shape.resources[index]
            if isinstance(patch, dict):
                del shape.resources[index]
                continue
            try:
                patched = jsonpatch.apply_patch(doc, patch)
            except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as error:
                shape.problems.append(f"{where}: does not apply to {name(doc)}: {error}")
                continue
            shape.resources[index] = (f"{resource_source} patched by {where}", patched)


def known_keys() -> dict:
    """The configuration's keys: deploy/echotrace.toml's, those it shows commented out in their
    section, and EXTRA_KEYS. A table with no keys there ([kafka.properties], [http.reviewers]) is
    a map whose keys are free; it is marked with the value None."""
    text = (REPO / "deploy" / "echotrace.toml").read_text()
    tree = tomllib.loads(text)
    section = None
    for line in text.splitlines():
        header = re.match(r"^\[([a-z_.]+)\]", line)
        if header:
            section = header.group(1)
            continue
        commented = re.match(r"^#\s*([a-z_]+)\s*=", line)
        if commented and section:
            node = tree
            for part in section.split("."):
                node = node[part]
            node.setdefault(commented.group(1), "")
    for dotted in EXTRA_KEYS:
        *parents, leaf = dotted.split(".")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node.setdefault(leaf, "")

    def mark(node: dict) -> dict:
        return {key: (None if value == {} else mark(value) if isinstance(value, dict) else value)
                for key, value in node.items()}
    return mark(tree)


def unknown_keys(config: dict, known: dict, prefix: str = "") -> list[str]:
    problems = []
    for key, value in config.items():
        name = f"{prefix}{key}"
        if key not in known:
            problems.append(name)
        elif isinstance(known[key], dict):
            if isinstance(value, dict):
                problems += unknown_keys(value, known[key], name + ".")
            else:
                problems.append(f"{name} (a table, given a value)")
    return problems


# --- walking the resources -------------------------------------------------------------------

def pod_spec(doc: dict) -> dict | None:
    kind = doc.get("kind")
    if kind == "CronJob":
        return doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    if kind in WORKLOADS:
        return doc["spec"]["template"]["spec"]
    if kind == "Pod":
        return doc["spec"]
    return None


def pod_labels(doc: dict) -> dict:
    if doc["kind"] == "CronJob":
        return doc["spec"]["jobTemplate"]["spec"]["template"]["metadata"].get("labels", {})
    return doc["spec"]["template"]["metadata"].get("labels", {})


def workloads(shape: Shape) -> list[tuple[str, dict]]:
    return [(source, doc) for source, doc in shape.resources if pod_spec(doc) is not None]


def name(doc: dict) -> str:
    return f"{doc['kind']}/{doc['metadata']['name']}"


def selects(selector: dict, labels: dict) -> bool:
    """A label selector (matchLabels and matchExpressions, or a Service's plain map) on labels."""
    if not selector:
        return False
    plain = selector if "matchLabels" not in selector and "matchExpressions" not in selector else None
    match_labels = plain if plain is not None else selector.get("matchLabels", {})
    if any(labels.get(key) != value for key, value in match_labels.items()):
        return False
    for expression in (selector.get("matchExpressions", []) if plain is None else []):
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        if not {"In": lambda: labels.get(key) in values, "NotIn": lambda: labels.get(key) not in values,
                "Exists": lambda: key in labels, "DoesNotExist": lambda: key not in labels}[operator]():
            return False
    return bool(match_labels or selector.get("matchExpressions"))


def selected(shape: Shape, selector: dict) -> list[dict]:
    return [doc for _, doc in workloads(shape) if selects(selector, pod_labels(doc))]


def containers(spec: dict) -> list[dict]:
    return spec.get("initContainers", []) + spec.get("containers", [])


def literal_env(container: dict) -> dict[str, str]:
    return {var["name"]: var["value"] for var in container.get("env", []) if "value" in var}


def config_maps(shape: Shape) -> dict[str, dict]:
    return {doc["metadata"]["name"]: doc for _, doc in shape.resources if doc["kind"] == "ConfigMap"}


def mounted_file(spec: dict, container: dict, path: str, shape: Shape) -> tuple[str, str, str] | None:
    """(kind, name, key) of the ConfigMap or Secret key a container sees at path, if any."""
    volumes = {volume["name"]: volume for volume in spec.get("volumes", [])}
    for mount in container.get("volumeMounts", []):
        base = mount["mountPath"].rstrip("/") + "/"
        if not path.startswith(base) or mount["name"] not in volumes:
            continue
        inner = path[len(base):]
        volume = volumes[mount["name"]]
        for kind, field, name_field in (("Secret", "secret", "secretName"), ("ConfigMap", "configMap", "name")):
            if field not in volume:
                continue
            source = volume[field]
            items = source.get("items")
            if items:
                for item in items:
                    if item["path"] == inner:
                        return kind, source[name_field], item["key"]
            elif "/" not in inner:
                if kind == "ConfigMap":
                    data = config_maps(shape).get(source[name_field], {}).get("data", {})
                    if inner not in data:
                        continue
                return kind, source[name_field], inner
    return None


def effective_config(spec: dict, container: dict, shape: Shape) -> dict:
    """The configuration a container loads: the files of ECHOTRACE_CONFIG in order, then the
    literal ECHOTRACE_ variables (sections and keys as check_env resolves them)."""
    config: dict = {}

    def merge(into: dict, update: dict) -> None:
        for key, value in update.items():
            if isinstance(value, dict) and isinstance(into.get(key), dict):
                merge(into[key], value)
            else:
                into[key] = copy.deepcopy(value)

    env = literal_env(container)
    for path in env.get("ECHOTRACE_CONFIG", "").split(","):
        if path == IMAGE_CONFIG:
            merge(config, tomllib.loads((REPO / "deploy" / "echotrace.toml").read_text()))
            continue
        found = mounted_file(spec, container, path, shape)
        if found and found[0] == "ConfigMap":
            text = config_maps(shape).get(found[1], {}).get("data", {}).get(found[2])
            if text is not None:
                merge(config, tomllib.loads(text))
    for variable, value in env.items():
        if variable.startswith("ECHOTRACE_") and variable not in NON_KEY_VARIABLES:
            node = config
            *parents, leaf = variable.removeprefix("ECHOTRACE_").lower().split("__")
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = value
    return config


def command_of(container: dict) -> str:
    """The echotrace subcommand a container runs (run, serve-sql, compact, ...)."""
    return (container.get("args") or ["run"])[0]


def listen_address(container: dict, config: dict) -> tuple[str, str] | None:
    """(configuration section, address) a `run` or `serve-sql` container listens on."""
    command = command_of(container)
    if command == "run":
        return "http", config.get("http", {}).get("listen", "")
    if command == "serve-sql":
        args = container.get("args", [])
        if "--listen" in args:
            return "query", args[args.index("--listen") + 1]
        return "query", config.get("query", {}).get("listen", "")
    return None


def listen_port(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def is_loopback(address: str) -> bool:
    host = address.rsplit(":", 1)[0].strip("[]")
    return host in ("localhost", "::1") or host.startswith("127.")


# --- checks ----------------------------------------------------------------------------------

def check_schema(source: str, doc: dict) -> str | None:
    try:
        kv.validate(doc, KUBERNETES_VERSION, strict=True)
    except kv.ValidationError as error:
        where = ".".join(str(part) for part in error.path) or "(top level)"
        return f"{name(doc)}: {where}: {error.message}"
    except kv.SchemaNotFoundError as error:
        return error.message
    except kv.VersionNotSupportedError as error:
        return error.message
    return None


def check_kustomizations(shapes: dict[str, Shape]) -> str | None:
    problems = [problem for shape in shapes.values() for problem in shape.problems]
    listed = set().union(*(shape.files for shape in shapes.values()))
    for path in sorted(HERE.rglob("*.y*ml")):
        if path.name != "kustomization.yaml" and path.resolve() not in listed:
            problems.append(f"{rel(path)} is listed by no kustomization")
    for path in sorted(HERE.rglob("kustomization.yaml")):
        if not any(path in shape.kustomizations for shape in shapes.values()):
            problems.append(f"{rel(path)} is not a shape's and no shape includes it")
    return "\n".join(dict.fromkeys(problems)) or None


def check_config_file(known: dict) -> str | None:
    path = HERE / "base" / "echotrace.toml"
    try:
        config = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        return f"{rel(path)}: {error}"
    unknown = unknown_keys(config, known)
    return f"{rel(path)}: unknown keys {unknown}" if unknown else None


def check_env(shape: Shape, known: dict) -> str | None:
    problems = []
    echotrace_services = [doc["metadata"]["name"] for _, doc in shape.resources
                          if doc["kind"] == "Service" and doc["metadata"]["name"].startswith("echotrace")]
    for _, doc in workloads(shape):
        spec = pod_spec(doc)
        if echotrace_services and spec.get("enableServiceLinks", True):
            problems.append(f"{name(doc)}: enableServiceLinks is not false, and the Services "
                            f"{echotrace_services} would put ECHOTRACE_* variables in its environment")
        for container in containers(spec):
            where = f"{name(doc)} container {container['name']}"
            for var in container.get("env", []):
                variable = var["name"]
                if not variable.startswith("ECHOTRACE_") or variable in NON_KEY_VARIABLES:
                    continue
                node: object = known
                parts = variable.removeprefix("ECHOTRACE_").lower().split("__")
                for depth, part in enumerate(parts):
                    if not isinstance(node, dict) or part not in node:
                        what = "section" if depth == 0 else "key"
                        problems.append(f"{where}: {variable}: no configuration {what} "
                                        f"{'.'.join(parts[:depth + 1])} (deploy/echotrace.toml)")
                        break
                    node = node[part]
                else:
                    if len(parts) < 2:
                        problems.append(f"{where}: {variable} names a section, not a key")
                value = var.get("value")
                if variable == "ECHOTRACE_STAGE__ROLE" and value is not None and value not in ROLES:
                    problems.append(f"{where}: stage.role {value!r} is not one of {sorted(ROLES)}")
                if variable == "ECHOTRACE_EMBED__DEVICE" and value is not None and value not in DEVICES:
                    problems.append(f"{where}: embed.device {value!r} is not one of {sorted(DEVICES)}")
            files = literal_env(container).get("ECHOTRACE_CONFIG")
            if files is None:
                problems.append(f"{where}: no ECHOTRACE_CONFIG (the image's entrypoint --config is replaced)")
                continue
            for path in files.split(","):
                if path == IMAGE_CONFIG:
                    continue
                found = mounted_file(spec, container, path, shape)
                if not found or found[0] != "ConfigMap":
                    problems.append(f"{where}: ECHOTRACE_CONFIG names {path}, which is neither the "
                                    f"image's {IMAGE_CONFIG} nor a key of a mounted ConfigMap")
    return "\n".join(problems) or None


def check_images(shape: Shape) -> str | None:
    problems = []
    for _, doc in workloads(shape):
        for container in containers(pod_spec(doc)):
            image = container["image"].rsplit(":", 1)[0]
            where = f"{name(doc)} container {container['name']}"
            if image not in IMAGES:
                problems.append(f"{where}: image {image} is built by none of {sorted(IMAGES)}")
                continue
            path = IMAGES[image]
            text = path.read_text() if path.exists() else ""
            if not text:
                problems.append(f"{where}: no Dockerfile {path.relative_to(REPO)} for image {image}")
                continue
            built = path.relative_to(REPO)
            copies = [line.split() for line in text.splitlines() if line.startswith("COPY ")]
            for words in copies:
                if not any(word.startswith("--from") for word in words):
                    problems += [f"{built}: copies {source}, which is not in the repository"
                                 for source in words[1:-1] if not (REPO / source).exists()]
            if not any("deploy/echotrace.toml" in words and words[-1] == "/etc/echotrace/" for words in copies):
                problems.append(f"{built}: does not copy deploy/echotrace.toml to {IMAGE_CONFIG}")
            binary = (container.get("command") or [""])[0]
            if binary and not any(words[-1] == binary for words in copies):
                problems.append(f"{where}: runs {binary}, which {built} does not copy there")
            if image == "echotrace-cuda":
                if not re.search(r"cargo build .*--features cuda", text):
                    problems.append(f"{built}: the CUDA image is not built with --features cuda")
                if not re.search(r"^ENV ORT_DYLIB_PATH=\S+", text, re.MULTILINE):
                    problems.append(f"{built}: sets no ORT_DYLIB_PATH (ONNX Runtime's GPU library)")
    return "\n".join(dict.fromkeys(problems)) or None


def check_probes(shape: Shape) -> str | None:
    problems = []
    for _, doc in workloads(shape):
        spec = pod_spec(doc)
        for container in containers(spec):
            where = f"{name(doc)} container {container['name']}"
            ports = container.get("ports", [])
            by_name = {port["name"]: port["containerPort"] for port in ports if "name" in port}
            numbers = {port["containerPort"] for port in ports}
            for probe_kind in ("livenessProbe", "readinessProbe", "startupProbe"):
                probe = container.get(probe_kind)
                if not probe:
                    continue
                action = probe.get("httpGet") or probe.get("tcpSocket") or probe.get("grpc")
                if action is None:
                    continue
                port = action["port"]
                if (port not in by_name) if isinstance(port, str) else (port not in numbers):
                    problems.append(f"{where}: {probe_kind} on port {port!r}, which the container does "
                                    f"not declare (it declares {sorted(by_name) or sorted(numbers)})")
            command = command_of(container)
            config = effective_config(spec, container, shape)
            listening = listen_address(container, config)
            if listening is None:
                continue
            listens = listening[1]
            if command == "run":
                paths = {kind: container.get(kind, {}).get("httpGet", {}).get("path")
                         for kind in ("livenessProbe", "readinessProbe")}
                if paths != {"livenessProbe": "/healthz", "readinessProbe": "/readyz"}:
                    problems.append(f"{where}: probes {paths}, wanted liveness /healthz and readiness /readyz")
            if not listens or listen_port(listens) not in numbers:
                problems.append(f"{where}: `{command}` listens on {listens or '?'}, a port the container "
                                f"does not declare ({sorted(numbers)})")
            elif is_loopback(listens):
                problems.append(f"{where}: `{command}` listens on loopback ({listens}): the kubelet's "
                                f"probes and the Services cannot reach it")
    return "\n".join(problems) or None


def check_services(shape: Shape) -> str | None:
    problems = []
    for _, service in shape.resources:
        if service["kind"] != "Service":
            continue
        selector = service["spec"].get("selector", {})
        pods = selected(shape, selector)
        if not pods:
            problems.append(f"{name(service)}: selector {selector} selects no workload's pods")
            continue
        for port in service["spec"].get("ports", []):
            target = port.get("targetPort", port["port"])
            for pod in pods:
                declared = [p for c in containers(pod_spec(pod)) for p in c.get("ports", [])]
                if not any(p.get("name") == target if isinstance(target, str) else p["containerPort"] == target
                           for p in declared):
                    problems.append(f"{name(service)}: port {port.get('name', port['port'])} targets "
                                    f"{target!r}, which {name(pod)} does not declare")
    return "\n".join(problems) or None


def check_budgets(shape_name: str, shape: Shape) -> str | None:
    problems = []
    # Only where standbys are meant: elsewhere a second detect replica is check_roles' error.
    standbys = {name(doc) for doc in standby_sets(shape)} if shape_name in STANDBY_SHAPES else set()
    budgets_of: dict[str, list[str]] = {}
    for _, budget in shape.resources:
        if budget["kind"] != "PodDisruptionBudget":
            continue
        pods = selected(shape, budget["spec"].get("selector", {}))
        if not pods:
            problems.append(f"{name(budget)}: selects no workload's pods")
        for pod in pods:
            budgets_of.setdefault(name(pod), []).append(name(budget))
    for workload, budgets in budgets_of.items():
        if len(budgets) > 1:
            problems.append(f"{workload}: its pods have {len(budgets)} budgets {budgets}; eviction refuses them")
    for _, doc in workloads(shape):
        if name(doc) in standbys:
            if name(doc) in budgets_of:
                problems.append(f"{name(doc)}: runs standbys, which are never ready, and a budget counts ready "
                                f"pods only: {budgets_of[name(doc)]} would forbid evicting the active pod")
        elif doc["kind"] in ("Deployment", "StatefulSet") and name(doc) not in budgets_of:
            problems.append(f"{name(doc)}: no PodDisruptionBudget selects its pods")
    return "\n".join(problems) or None


def check_references(shape: Shape) -> str | None:
    problems = []
    services = {doc["metadata"]["name"]: doc for _, doc in shape.resources if doc["kind"] == "Service"}
    claims = {doc["metadata"]["name"]: doc for _, doc in shape.resources if doc["kind"] == "PersistentVolumeClaim"}
    for _, doc in shape.resources:
        if doc["kind"] == "StatefulSet":
            for template in doc["spec"].get("volumeClaimTemplates", []):
                for ordinal in range(doc["spec"].get("replicas", 1)):
                    claims[f"{template['metadata']['name']}-{doc['metadata']['name']}-{ordinal}"] = doc
    for _, doc in workloads(shape):
        spec = pod_spec(doc)
        if doc["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet"):
            if not selects(doc["spec"]["selector"], pod_labels(doc)):
                problems.append(f"{name(doc)}: its selector does not select its own pod template")
        if doc["kind"] == "StatefulSet":
            governing = services.get(doc["spec"].get("serviceName"))
            if governing is None or governing["spec"].get("clusterIP") != "None" \
                    or not selects(governing["spec"].get("selector", {}), pod_labels(doc)):
                problems.append(f"{name(doc)}: serviceName {doc['spec'].get('serviceName')!r} is not a "
                                f"headless Service selecting its pods")
        volumes = {volume["name"]: volume for volume in spec.get("volumes", [])}
        templates = {t["metadata"]["name"] for t in doc["spec"].get("volumeClaimTemplates", [])}
        for volume in volumes.values():
            if "configMap" in volume and volume["configMap"]["name"] not in config_maps(shape):
                problems.append(f"{name(doc)}: volume {volume['name']}: no ConfigMap {volume['configMap']['name']}")
            if "persistentVolumeClaim" in volume and volume["persistentVolumeClaim"]["claimName"] not in claims:
                problems.append(f"{name(doc)}: volume {volume['name']}: claim "
                                f"{volume['persistentVolumeClaim']['claimName']} is neither a StatefulSet's "
                                f"nor a PersistentVolumeClaim (known: {sorted(claims)})")
        names = {c["name"] for c in containers(spec)}
        for container in containers(spec):
            for mount in container.get("volumeMounts", []):
                if mount["name"] not in volumes and mount["name"] not in templates:
                    problems.append(f"{name(doc)} container {container['name']}: mounts {mount['name']}, "
                                    f"which is neither a volume nor a claim template")
            for var in container.get("env", []):
                ref = var.get("valueFrom", {}).get("resourceFieldRef")
                if ref:
                    target = next((c for c in containers(spec) if c["name"] == ref.get("containerName", container["name"])), None)
                    kind, _, resource = ref["resource"].partition(".")
                    if target is None:
                        problems.append(f"{name(doc)}: {var['name']} refers to container "
                                        f"{ref.get('containerName')!r}, not one of {sorted(names)}")
                    elif resource not in target.get("resources", {}).get(kind, {}):
                        problems.append(f"{name(doc)}: {var['name']} reads {ref['resource']}, which "
                                        f"container {target['name']} does not set (it would get the node's)")
        affinity = spec.get("affinity", {})
        terms = [term for kind in ("podAffinity", "podAntiAffinity") for term in
                 affinity.get(kind, {}).get("requiredDuringSchedulingIgnoredDuringExecution", [])]
        terms += [term["podAffinityTerm"] for kind in ("podAffinity", "podAntiAffinity") for term in
                  affinity.get(kind, {}).get("preferredDuringSchedulingIgnoredDuringExecution", [])]
        for term in terms + spec.get("topologySpreadConstraints", []):
            if not selected(shape, term.get("labelSelector", {})):
                problems.append(f"{name(doc)}: affinity or spread selector {term.get('labelSelector')} "
                                f"selects no workload's pods")
    return "\n".join(problems) or None


def check_secrets(shape: Shape) -> str | None:
    problems = []
    readme = (HERE / "README.md").read_text() if (HERE / "README.md").exists() else ""
    read: set[tuple[str, str]] = set()
    for source, doc in shape.resources:
        if doc["kind"] == "Secret":
            problems.append(f"{source}: {name(doc)}: Secrets are created in the cluster, never kept here")
    for _, doc in workloads(shape):
        spec = pod_spec(doc)
        for volume in spec.get("volumes", []):
            if "secret" in volume:
                for item in volume["secret"].get("items", []):
                    read.add((volume["secret"]["secretName"], item["key"]))
                if not volume["secret"].get("items"):
                    problems.append(f"{name(doc)}: volume {volume['name']} mounts every key of "
                                    f"{volume['secret']['secretName']}; list the ones it reads")
        for container in containers(spec):
            where = f"{name(doc)} container {container['name']}"
            for var in container.get("env", []):
                if SECRET_NAMES.search(var["name"]) and "value" in var:
                    problems.append(f"{where}: {var['name']} is written in the manifest; read it from a Secret")
                ref = var.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    read.add((ref["name"], ref["key"]))
            config = effective_config(spec, container, shape)
            listening = listen_address(container, config)
            if listening is None:
                continue
            wanted, address = listening
            section = config.get(wanted, {})
            if section.get("token"):
                problems.append(f"{where}: {wanted}.token is written in the configuration; use {wanted}.token_file")
            if is_loopback(address):
                continue
            token_file = section.get("token_file")
            if not token_file:
                problems.append(f"{where}: {wanted}.listen is off loopback and no {wanted}.token_file is set: "
                                f"echotrace refuses to start")
                continue
            found = mounted_file(spec, container, token_file, shape)
            if not found or found[0] != "Secret":
                problems.append(f"{where}: {wanted}.token_file {token_file} is not mounted from a Secret")
    for secret, key in sorted(read):
        if not re.search(rf"\b{re.escape(secret)}\b", readme) or f"`{key}`" not in readme:
            problems.append(f"Secret {secret} key {key}: not documented in deploy/kubernetes/README.md")
    return "\n".join(problems) or None


def check_security(shape: Shape) -> str | None:
    problems = []
    for _, doc in workloads(shape):
        spec = pod_spec(doc)
        pod = spec.get("securityContext", {})
        for field in ("hostNetwork", "hostPID", "hostIPC"):
            if spec.get(field):
                problems.append(f"{name(doc)}: {field}")
        if spec.get("automountServiceAccountToken") is not False:
            problems.append(f"{name(doc)}: automountServiceAccountToken is not false (echotrace never calls the API)")
        if any("hostPath" in volume for volume in spec.get("volumes", [])):
            problems.append(f"{name(doc)}: a hostPath volume")
        for container in containers(spec):
            where = f"{name(doc)} container {container['name']}"
            context = container.get("securityContext", {})

            def setting(field: str):
                return context.get(field, pod.get(field))
            if setting("runAsNonRoot") is not True:
                problems.append(f"{where}: runAsNonRoot is not true")
            if setting("runAsUser") == 0:
                problems.append(f"{where}: runs as uid 0")
            if (setting("seccompProfile") or {}).get("type") not in ("RuntimeDefault", "Localhost"):
                problems.append(f"{where}: no RuntimeDefault seccomp profile")
            if context.get("privileged"):
                problems.append(f"{where}: privileged")
            if context.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{where}: allowPrivilegeEscalation is not false")
            if "ALL" not in context.get("capabilities", {}).get("drop", []) or context.get("capabilities", {}).get("add"):
                problems.append(f"{where}: capabilities not dropped to none")
            if context.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{where}: the root filesystem is writable")
            resources = container.get("resources", {})
            for kind in ("requests", "limits"):
                missing = {"cpu", "memory"} - set(resources.get(kind, {}))
                if missing:
                    problems.append(f"{where}: no {kind} for {sorted(missing)}")
    return "\n".join(problems) or None


def runs_by_role(shape: Shape) -> dict[str, list[tuple[dict, dict, dict]]]:
    """The workloads of each stage.role: (workload, its `run` container, its configuration)."""
    runs: dict[str, list[tuple[dict, dict, dict]]] = {}
    for _, doc in workloads(shape):
        spec = pod_spec(doc)
        for container in containers(spec):
            if command_of(container) != "run":
                continue
            config = effective_config(spec, container, shape)
            role = config.get("stage", {}).get("role", "whole")
            runs.setdefault(role, []).append((doc, container, config))
    return runs


def standby_sets(shape: Shape) -> list[dict]:
    """The detect workloads of more than one replica: one active pod, the others standing by."""
    return [doc for doc, _, _ in runs_by_role(shape).get("detect", []) if doc["spec"].get("replicas", 1) > 1]


def check_standbys(shape: Shape, doc: dict, container: dict, config: dict) -> list[str]:
    """What detect standbys need of their StatefulSet (check 12; budgets are check_budgets')."""
    problems = []
    spec = doc["spec"]
    if doc["kind"] != "StatefulSet":
        return [f"{name(doc)}: detect standbys are a StatefulSet, not a {doc['kind']}"]
    if spec.get("podManagementPolicy") != "Parallel":
        problems.append(f"{name(doc)}: podManagementPolicy is not Parallel: OrderedReady creates no pod "
                        f"after a standby, which is never ready")
    if spec.get("updateStrategy", {}).get("type") != "OnDelete":
        problems.append(f"{name(doc)}: updateStrategy is not OnDelete: a RollingUpdate waits for each "
                        f"updated pod to be ready, which a standby never is")
    if spec.get("volumeClaimTemplates"):
        problems.append(f"{name(doc)}: claim templates give each pod its own volumes; standbys share theirs")
    pod = pod_spec(doc)
    volumes = {volume["name"]: volume for volume in pod.get("volumes", [])}
    claims = {claim["metadata"]["name"]: claim for _, claim in shape.resources
              if claim["kind"] == "PersistentVolumeClaim"}
    for key in ("output", "state"):
        path = config.get(key, {}).get("dir", "")
        mount = next((mount for mount in container.get("volumeMounts", [])
                      if path.startswith(mount["mountPath"].rstrip("/") + "/") or path == mount["mountPath"]), None)
        claim = claims.get(volumes.get(mount["name"] if mount else "", {})
                           .get("persistentVolumeClaim", {}).get("claimName"))
        if claim is None or "ReadWriteMany" not in claim["spec"].get("accessModes", []):
            problems.append(f"{name(doc)}: {key}.dir {path or '?'} is not on a ReadWriteMany claim every "
                            f"pod shares: a standby could not restore what the active pod left")
    anti = pod.get("affinity", {}).get("podAntiAffinity", {}).get("requiredDuringSchedulingIgnoredDuringExecution", [])
    if not any(term.get("topologyKey") == "kubernetes.io/hostname"
               and selects(term.get("labelSelector", {}), pod_labels(doc)) for term in anti):
        problems.append(f"{name(doc)}: no required anti-affinity on kubernetes.io/hostname among its own "
                        f"pods: one node could hold the active pod and its standbys")
    return problems


def check_roles(shape_name: str, shape: Shape) -> str | None:
    problems = []
    runs = runs_by_role(shape)
    wanted = SHAPES[shape_name]
    if set(runs) != wanted:
        problems.append(f"roles {sorted(runs)}, wanted {sorted(wanted)}")
    for role in ("whole", "detect", "gate"):
        for doc, container, config in runs.get(role, []):
            if role == "detect" and shape_name in STANDBY_SHAPES:
                if doc["spec"].get("replicas", 1) < 2:
                    problems.append(f"{name(doc)}: {shape_name} runs detect standbys: more than one replica")
                problems += check_standbys(shape, doc, container, config)
            elif doc["kind"] != "StatefulSet" or doc["spec"].get("replicas") != 1:
                problems.append(f"{name(doc)}: the {role} role is the one stateful writer: a StatefulSet "
                                f"of replicas 1, not {doc['kind']} of {doc['spec'].get('replicas')}")
    groups = {}
    for role, entries in runs.items():
        for doc, container, config in entries:
            group = config.get("kafka", {}).get("group_id")
            # The prepare stage joins kafka.group_id + "-prepare" (services/echotrace/src/stages/prepare.rs),
            # link shard n commits under kafka.group_id + "-link-<n>" (stages/link.rs).
            # Owner n commits under "-score-<n>" (stages/score.rs), the gate under "-gate" (stages/gate.rs).
            suffix = {"prepare": "-prepare", "link": "-link-<n>", "score": "-score-<n>", "gate": "-gate"}.get(role, "")
            groups.setdefault(f"{group}{suffix}", set()).add(role)
            spec = pod_spec(doc)
            gpu = container.get("resources", {}).get("limits", {}).get("nvidia.com/gpu")
            device = config.get("embed", {}).get("device", "cpu")
            tolerates = any(t.get("key") == "nvidia.com/gpu" for t in spec.get("tolerations", []))
            if role == "prepare" and (device != "cuda" or not gpu or not tolerates or not spec.get("nodeSelector")):
                problems.append(f"{name(doc)}: prepare runs on the GPU pool: embed.device = \"cuda\" (is {device!r}), "
                                f"a nvidia.com/gpu limit ({gpu}), a nodeSelector and the nvidia.com/gpu toleration")
            if role != "prepare" and (gpu or device == "cuda"):
                problems.append(f"{name(doc)}: the {role} role embeds on the CPU in these manifests; "
                                f"GPU settings belong to prepare")
    for group, roles in groups.items():
        if len(roles) > 1:
            problems.append(f"roles {sorted(roles)} share the consumer group {group!r}")
    # The link stage: one StatefulSet replica per shard, holding the shard of its pod index, as
    # many as the detect stage asks (stage.link_stage, detector.link_shards).
    links = runs.get("link", [])
    detect_asks = {str(config.get("stage", {}).get("link_stage", False)).lower() == "true"
                   for _, _, config in runs.get("detect", [])}
    if links and detect_asks != {True}:
        problems.append("link pods run, but the detect stage does not ask them (stage.link_stage)")
    shard_counts = {str(config.get("detector", {}).get("link_shards", 1))
                    for _, _, config in runs.get("detect", []) + links}
    problems += check_numbered(links, "link_shard", ("detector.link_shards", shard_counts))
    problems += check_scorer(shape, runs)
    return "\n".join(problems) or None


def check_numbered(runs: list[tuple[dict, dict, dict]], key: str, count: tuple[str, set]) -> list[str]:
    """Stages whose pod n holds part n of N (link shards, owners of cascades): a StatefulSet of N
    replicas, N the same count everywhere (`count`: its key and the values found), each pod's
    stage.`key` its pod index."""
    problems = []
    count_key, counts = count
    variable = f"ECHOTRACE_STAGE__{key.upper()}"
    for doc, container, _ in runs:
        if doc["kind"] != "StatefulSet" or {str(doc["spec"].get("replicas", 1))} != counts:
            problems.append(f"{name(doc)}: one StatefulSet replica per part: replicas "
                            f"{doc['spec'].get('replicas')}, {count_key} {sorted(counts)}")
        number = next((var for var in container.get("env", []) if var["name"] == variable), {})
        if number.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") != \
                "metadata.labels['apps.kubernetes.io/pod-index']":
            problems.append(f"{name(doc)}: stage.{key} is not the pod's index (apps.kubernetes.io/pod-index)")
    return problems


def check_scorer(shape: Shape, runs: dict[str, list[tuple[dict, dict, dict]]]) -> list[str]:
    """The scorer apart (stage.score_stage): one StatefulSet replica per owner of cascades, each the
    owner of its pod index, as many as the detect stage routes to and the gate waits for; one gate,
    writing alerts/ into the detect pods' datasets."""
    problems = []
    owners, gates, detects = runs.get("score", []), runs.get("gate", []), runs.get("detect", [])
    routes = {str(config.get("stage", {}).get("score_stage", False)).lower() == "true" for _, _, config in detects}
    if (owners or gates) and (routes != {True} or not owners or not gates):
        problems.append(f"score pods ({len(owners)}) and a gate ({len(gates)}) run together, and only where the "
                        f"detect stage routes to them (stage.score_stage: {sorted(routes)})")
    counts = {str(config.get("alerting", {}).get("cascade_owners", 1)) for _, _, config in owners + gates + detects}
    problems += check_numbered(owners, "score_owner", ("alerting.cascade_owners", counts))
    # The gate writes alerts/ where the detect pods write the other datasets: the same claim.
    def data_claims(doc: dict, container: dict, config: dict) -> set:
        output = config.get("output", {}).get("dir", "")
        mounts = {m["name"] for m in container.get("volumeMounts", []) if m.get("mountPath") == output}
        return {v.get("persistentVolumeClaim", {}).get("claimName") for v in pod_spec(doc).get("volumes", [])
                if v["name"] in mounts}
    detect_data = set().union(*(data_claims(*run) for run in detects)) if detects else set()
    for run in gates:
        claims = data_claims(*run)
        if not claims or None in claims or not claims <= detect_data:
            problems.append(f"{name(run[0])}: the gate's output.dir is not on the detect pods' datasets claim "
                            f"({sorted(map(str, claims))}, detect {sorted(map(str, detect_data))})")
    return problems


def main() -> int:
    shapes = {shape: render(HERE / shape) for shape in SHAPES}
    known = known_keys()
    checks: dict[str, callable] = {}
    seen = set()
    for shape in shapes.values():
        for source, doc in shape.resources:
            key = (source, name(doc))
            if key not in seen:
                seen.add(key)
                checks[f"Kubernetes {KUBERNETES_VERSION.rsplit('.', 1)[0]} schema, strict: {source}: {name(doc)}"] = \
                    (lambda source=source, doc=doc: check_schema(source, doc))
    checks["kustomizations list existing files, every manifest listed"] = lambda: check_kustomizations(shapes)
    checks["base/echotrace.toml: keys known to deploy/echotrace.toml"] = lambda: check_config_file(known)
    for shape_name, shape in shapes.items():
        checks[f"{shape_name}: ECHOTRACE_* variables name configuration keys"] = lambda s=shape: check_env(s, known)
        checks[f"{shape_name}: images built by the repository's Dockerfiles"] = lambda s=shape: check_images(s)
        checks[f"{shape_name}: probes on declared ports, the ones the process listens on"] = lambda s=shape: check_probes(s)
        checks[f"{shape_name}: Services select pods, target declared ports"] = lambda s=shape: check_services(s)
        checks[f"{shape_name}: PodDisruptionBudgets select a workload's pods"] = lambda n=shape_name, s=shape: check_budgets(n, s)
        checks[f"{shape_name}: selectors, governing Services, volumes and claims resolve"] = lambda s=shape: check_references(s)
        checks[f"{shape_name}: tokens from Secrets, mounted where read, documented"] = lambda s=shape: check_secrets(s)
        checks[f"{shape_name}: restricted pod security, read-only root, resources"] = lambda s=shape: check_security(s)
        checks[f"{shape_name}: stage roles, consumer groups, GPU placement, standbys"] = \
            lambda n=shape_name, s=shape: check_roles(n, s)
    failed = 0
    for title, check in checks.items():
        try:
            problem = check()
        except Exception as error:  # a manifest too broken to walk is a failure, not a crash
            problem = f"{type(error).__name__}: {error}"
        print(f"{'ok  ' if problem is None else 'FAIL'}  {title}")
        if problem:
            failed += 1
            print("      " + problem.strip().replace("\n", "\n      "))
    print(f"{len(checks) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
