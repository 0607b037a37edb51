"""The Kubernetes manifests (deploy/kubernetes): every kustomization there renders with
kustomize (kubectl's, offline: no cluster is needed) and each resource it yields validates
against the Kubernetes schemas in strict mode (kubernetes-validate), KEDA's resources against
their structure, checked here since no Kubernetes schema has them. Then what the manifests say
is held against tuneyard itself: the commands and flags they run parse with tuneyard's CLI,
the probes name the API's routes, the queue KEDA counts is the Redis keys RQ uses for the queue
the workers serve, a worker's grace period covers its hand-back, and the workers get neither
the database URL nor an admin token. deploy/kubernetes/README.md's Secrets are the ones the
manifests read."""

from __future__ import annotations

import copy
import functools
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate
import pytest
import typer.main
import yaml
from redis import Redis
from rq import Queue
from rq.registry import StartedJobRegistry

from tests.conftest import IN_CI
from tuneyard.cli import app as cli_app
from tuneyard.cli import processes

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "kubernetes"
KUSTOMIZATIONS = [
    "base",
    "migrate",
    "redis",
    "keda",
    "overlays/example",
    "overlays/example/migrate",
]
# The installations a user applies: the app with its migration beside it.
INSTALLATIONS = [("base", "migrate"), ("overlays/example", "overlays/example/migrate")]
# The oldest Kubernetes the manifests are meant for, and the newest the validator knows.
VERSIONS = ("1.30", kubernetes_validate.latest_version())
# `tuneyard worker` kills a slot still running this long after --grace has passed
# (tuneyard/worker/pool.py, run_pool).
POOL_KILL_AFTER_GRACE = 30
# The worker's Secret: the API's URL, a worker token and Redis, nothing else.
WORKER_SECRET = "tuneyard-worker"
WORKER_KEYS = {
    "TUNEYARD_API_URL": "api-url",
    "TUNEYARD_TOKEN": "token",
    "TUNEYARD_REDIS_URL": "redis-url",
}


def kubectl() -> str:
    """kubectl from the PATH; its built-in kustomize renders the manifests offline."""
    exe = shutil.which("kubectl")
    if exe is None:
        why = "kubectl is not on the PATH (its built-in kustomize renders deploy/kubernetes)"
        if IN_CI:
            pytest.fail(why, pytrace=False)
        pytest.skip(why)
    return exe


def build(path: Path) -> list[dict[str, Any]]:
    """`kubectl kustomize` of a directory: the resources, in kustomize's order."""
    r = subprocess.run(
        [kubectl(), "kustomize", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        # No cluster and no kubeconfig of the developer's: rendering is offline.
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "KUBECONFIG": os.devnull},
    )
    assert r.returncode == 0, r.stderr
    return [doc for doc in yaml.safe_load_all(r.stdout) if doc]


@functools.cache
def _render(name: str) -> tuple[dict[str, Any], ...]:
    return tuple(build(K8S / name))


def render(*names: str) -> list[dict[str, Any]]:
    """The resources of the kustomizations named (relative to deploy/kubernetes), a fresh copy."""
    return copy.deepcopy([r for name in names for r in _render(name)])


def one(resources: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [r for r in resources if r["kind"] == kind and r["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def pod_templates(resources: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for r in resources:
        if r["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            yield f"{r['kind']}/{r['metadata']['name']}", r["spec"]["template"]


def component(resources: list[dict[str, Any]], name: str) -> dict[str, Any]:
    """The pod template of the workload labelled app.kubernetes.io/component=name."""
    found = [
        t
        for _, t in pod_templates(resources)
        if t["metadata"]["labels"].get("app.kubernetes.io/component") == name
    ]
    assert len(found) == 1, f"{len(found)} workloads of component {name}"
    return found[0]


def container(template: dict[str, Any]) -> dict[str, Any]:
    (c,) = template["spec"]["containers"]
    return c


def cli_call(argv: list[str]) -> tuple[Any, dict[str, Any]]:
    """The tuneyard command an argv runs and its parameters as the CLI parses them (defaults
    filled in); an unknown command, flag or bad value raises the CLI's usage error."""
    assert argv[0] == "tuneyard", argv
    cmd: Any = typer.main.get_command(cli_app)
    words = argv[1:]
    # A group has subcommands by name; a command has parameters.
    while getattr(cmd, "commands", None) is not None:
        assert words and not words[0].startswith("-"), f"no subcommand in {argv}"
        sub = cmd.commands.get(words[0])
        assert sub is not None, f"tuneyard has no command {words[0]!r} ({argv})"
        cmd, words = sub, words[1:]
    ctx = cmd.make_context(" ".join(argv[:2]), list(words))
    return cmd, dict(ctx.params)


def worker_params(resources: list[dict[str, Any]]) -> dict[str, Any]:
    c = container(component(resources, "worker"))
    _, params = cli_call([*c["command"], *c.get("args", [])])
    return params


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Whether a label selector (matchLabels and matchExpressions) selects these labels."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for e in selector.get("matchExpressions", []):
        present = e["key"] in labels
        op = e["operator"]
        if op == "In" and labels.get(e["key"]) not in e["values"]:
            return False
        if op == "NotIn" and labels.get(e["key"]) in e["values"]:
            return False
        if (op == "Exists" and not present) or (op == "DoesNotExist" and present):
            return False
    return True


# KEDA's two kinds, as far as these manifests use them: the fields KEDA 2.12+ defines, and no
# others (a misspelt field is an error, as in kubernetes-validate's strict mode).
_STR = {"type": "string"}
_INT = {"type": "integer", "minimum": 0}
_META = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
        "namespace": _STR,
        "labels": {"type": "object", "additionalProperties": _STR},
        "annotations": {"type": "object", "additionalProperties": _STR},
    },
    "additionalProperties": False,
}
_DIGITS = {"type": "string", "pattern": "^[0-9]+$"}
SCALED_OBJECT = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "keda.sh/v1alpha1"},
        "kind": {"const": "ScaledObject"},
        "metadata": _META,
        "spec": {
            "type": "object",
            "required": ["scaleTargetRef", "triggers"],
            "additionalProperties": False,
            "properties": {
                "scaleTargetRef": {
                    "type": "object",
                    "required": ["name"],
                    "additionalProperties": False,
                    "properties": {
                        "apiVersion": _STR,
                        "kind": _STR,
                        "name": _STR,
                        "envSourceContainerName": _STR,
                    },
                },
                "pollingInterval": _INT,
                "cooldownPeriod": _INT,
                "initialCooldownPeriod": _INT,
                "idleReplicaCount": _INT,
                "minReplicaCount": _INT,
                "maxReplicaCount": _INT,
                "fallback": {"type": "object"},
                "advanced": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "restoreToOriginalReplicaCount": {"type": "boolean"},
                        "horizontalPodAutoscalerConfig": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {"name": _STR, "behavior": {"type": "object"}},
                        },
                        "scalingModifiers": {
                            "type": "object",
                            "required": ["formula", "target"],
                            "additionalProperties": False,
                            "properties": {
                                "formula": _STR,
                                "target": _DIGITS,
                                "activationTarget": _DIGITS,
                                "metricType": {"enum": ["AverageValue", "Value"]},
                            },
                        },
                    },
                },
                "triggers": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["type", "metadata"],
                        "additionalProperties": False,
                        "properties": {
                            "type": _STR,
                            "name": _STR,
                            "useCachedMetrics": {"type": "boolean"},
                            "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
                            "metadata": {"type": "object", "additionalProperties": _STR},
                            "authenticationRef": {
                                "type": "object",
                                "required": ["name"],
                                "additionalProperties": False,
                                "properties": {
                                    "name": _STR,
                                    "kind": {
                                        "enum": [
                                            "TriggerAuthentication",
                                            "ClusterTriggerAuthentication",
                                        ]
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}
# The parameters KEDA's redis scaler takes from a TriggerAuthentication.
REDIS_AUTH_PARAMETERS = {
    "address",
    "host",
    "port",
    "username",
    "password",
    "tls",
    "ca",
    "cert",
    "key",
}
TRIGGER_AUTHENTICATION = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "keda.sh/v1alpha1"},
        "kind": {"const": "TriggerAuthentication"},
        "metadata": _META,
        "spec": {
            "type": "object",
            "required": ["secretTargetRef"],
            "additionalProperties": False,
            "properties": {
                "secretTargetRef": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["parameter", "name", "key"],
                        "additionalProperties": False,
                        "properties": {"parameter": _STR, "name": _STR, "key": _STR},
                    },
                }
            },
        },
    },
}
# Each redis trigger: a key to count and a target per replica; what else it may say.
REDIS_TRIGGER_METADATA = {
    "type": "object",
    "required": ["listName", "listLength"],
    "additionalProperties": False,
    "properties": {
        "listName": {"type": "string", "minLength": 1},
        "listLength": _DIGITS,
        "activationListLength": _DIGITS,
        "databaseIndex": _DIGITS,
        "enableTLS": {"enum": ["true", "false"]},
        "unsafeSsl": {"enum": ["true", "false"]},
    },
}


def validate_keda(resource: dict[str, Any]) -> None:
    """Raise jsonschema.ValidationError (or AssertionError) unless a KEDA resource is sound."""
    if resource["kind"] == "TriggerAuthentication":
        jsonschema.validate(resource, TRIGGER_AUTHENTICATION)
        params = [ref["parameter"] for ref in resource["spec"]["secretTargetRef"]]
        assert set(params) <= REDIS_AUTH_PARAMETERS, params
        assert len(params) == len(set(params)), f"a parameter named twice: {params}"
        return
    assert resource["kind"] == "ScaledObject", resource["kind"]
    jsonschema.validate(resource, SCALED_OBJECT)
    spec = resource["spec"]
    assert spec.get("minReplicaCount", 0) <= spec.get("maxReplicaCount", 100)
    names = []
    for trigger in spec["triggers"]:
        assert trigger["type"] == "redis", trigger["type"]
        jsonschema.validate(trigger["metadata"], REDIS_TRIGGER_METADATA)
        names.append(trigger.get("name"))
    modifiers = spec.get("advanced", {}).get("scalingModifiers")
    if modifiers:
        # A formula combines the triggers by name: each needs one, and it may name no other.
        assert all(names) and len(set(names)) == len(names), f"trigger names: {names}"
        used = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", modifiers["formula"]))
        assert used == set(names), f"formula {modifiers['formula']!r} and triggers {names}"


def validate(resource: dict[str, Any]) -> None:
    if resource["apiVersion"].startswith("keda.sh/"):
        validate_keda(resource)
        return
    for version in VERSIONS:
        kubernetes_validate.validate(resource, version, strict=True)


def test_every_kustomization_is_tested() -> None:
    found = {str(p.parent.relative_to(K8S)) for p in K8S.rglob("kustomization.yaml") if p.is_file()}
    assert found == set(KUSTOMIZATIONS)


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_each_kustomization_renders_and_validates(name: str) -> None:
    resources = render(name)
    assert resources
    for resource in resources:
        validate(resource)


def test_validation_rejects_what_a_cluster_would() -> None:
    """Strict validation is what makes a misspelt field an error; and the KEDA checks catch
    the mistakes the Kubernetes schemas can't see."""
    resources = render("overlays/example")
    api = one(resources, "Deployment", "tuneyard-api")
    container(api["spec"]["template"])["readinesProbe"] = {"httpGet": {"path": "/readyz"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(api)
    worker = one(resources, "Deployment", "tuneyard-worker")
    worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = "120"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(worker)

    scaled = one(resources, "ScaledObject", "tuneyard-worker")
    misspelt = copy.deepcopy(scaled)
    misspelt["spec"]["maxReplicas"] = misspelt["spec"].pop("maxReplicaCount")
    no_list = copy.deepcopy(scaled)
    del no_list["spec"]["triggers"][0]["metadata"]["listName"]
    unnamed = copy.deepcopy(scaled)
    del unnamed["spec"]["triggers"][1]["name"]
    wrong_formula = copy.deepcopy(scaled)
    wrong_formula["spec"]["advanced"]["scalingModifiers"]["formula"] = "queued + runing"
    for broken in (misspelt, no_list, unnamed, wrong_formula):
        with pytest.raises((jsonschema.ValidationError, AssertionError)):
            validate(broken)
    auth = one(resources, "TriggerAuthentication", "tuneyard-redis")
    auth["spec"]["secretTargetRef"][0]["parameter"] = "passwd"
    with pytest.raises(AssertionError):
        validate(auth)


def test_the_base_has_no_namespace_and_the_overlay_sets_one() -> None:
    for name in ("base", "migrate", "redis", "keda"):
        for r in render(name):
            assert "namespace" not in r["metadata"], (name, r["kind"], r["metadata"]["name"])
    for name in ("overlays/example", "overlays/example/migrate"):
        assert {r["metadata"].get("namespace") for r in render(name)} == {"tuneyard"}


@pytest.mark.parametrize("name", ["base", "overlays/example"])
def test_workers_get_the_api_a_token_and_redis_and_nothing_else(name: str) -> None:
    """Every objective sees its worker's environment: a database URL or an admin token there
    would let any study's code make itself an admin."""
    template = component(render(name), "worker")
    spec = template["spec"]
    c = container(template)
    assert "envFrom" not in c
    from_secrets = {
        e["name"]: e["valueFrom"]["secretKeyRef"]
        for e in c["env"]
        if "secretKeyRef" in e.get("valueFrom", {})
    }
    assert {k: (v["name"], v["key"]) for k, v in from_secrets.items()} == {
        k: (WORKER_SECRET, v) for k, v in WORKER_KEYS.items()
    }
    for e in c["env"]:
        assert "DATABASE" not in e["name"] and "ADMIN" not in e["name"], e
        assert "valueFrom" not in e or e["name"] in WORKER_KEYS, e
        assert not re.search(r"postgres|sqlite", str(e.get("value", ""))), e
    # No Secret reaches it any other way (a mounted volume, an init container).
    assert not spec.get("initContainers")
    for volume in spec.get("volumes", []):
        assert not {"secret", "projected", "configMap"} & set(volume), volume


@pytest.mark.parametrize("name", ["base", "overlays/example"])
def test_a_worker_pod_is_one_process_on_one_gpu(name: str) -> None:
    resources = render(name)
    c = container(component(resources, "worker"))
    assert str(c["resources"]["limits"]["nvidia.com/gpu"]) == "1"
    assert str(c["resources"].get("requests", {}).get("nvidia.com/gpu", "1")) == "1"
    params = worker_params(resources)
    # One GPU id (the one the device plugin gives the container), or one CPU slot.
    if params["gpus"] not in (None, "none"):
        assert re.fullmatch(r"\d+", params["gpus"]), params["gpus"]
        assert params["slots"] is None
    else:
        assert params["slots"] == 1


@pytest.mark.parametrize("name", ["base", "overlays/example"])
def test_a_worker_has_time_to_hand_its_trial_back(name: str) -> None:
    """On SIGTERM a worker gives its objective --grace seconds to reach a report, then kills
    what is left POOL_KILL_AFTER_GRACE seconds later: Kubernetes' SIGKILL must come after."""
    resources = render(name)
    spec = component(resources, "worker")["spec"]
    grace = worker_params(resources)["grace"]
    assert spec["terminationGracePeriodSeconds"] >= grace + POOL_KILL_AFTER_GRACE


@pytest.mark.parametrize(("app", "migrate"), INSTALLATIONS)
def test_each_process_runs_a_real_tuneyard_command(app: str, migrate: str) -> None:
    resources = render(app, migrate)
    expected = {
        "api": processes.server,
        "dispatcher": processes.dispatcher,
        "worker": processes.worker,
        "migrate": processes.db_upgrade,
    }
    for name, function in expected.items():
        c = container(component(resources, name))
        cmd, _ = cli_call([*c["command"], *c.get("args", [])])
        assert cmd.callback is not None
        assert getattr(cmd.callback, "__wrapped__", cmd.callback) is function, name
    c = container(component(resources, "migrate"))
    assert c["command"] == ["tuneyard", "db", "upgrade"] and "args" not in c


def test_the_api_probes_its_own_routes(tmp_path: Path) -> None:
    from tuneyard.api.app import create_app
    from tuneyard.settings import Settings

    routes = {
        getattr(r, "path", None)
        for r in create_app(
            Settings(database_url=f"sqlite:///{tmp_path / 'db'}", data_dir=tmp_path)
        ).routes
    }
    resources = render("base")
    api = one(resources, "Deployment", "tuneyard-api")
    c = container(api["spec"]["template"])
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        get = c[probe]["httpGet"]
        assert get["path"] in routes
        assert get["port"] in ports or get["port"] in ports.values()
    _, params = cli_call(c["command"])
    assert params["port"] in ports.values()
    assert api["spec"]["replicas"] >= 2
    service = one(resources, "Service", "tuneyard-api")
    assert selects(
        {"matchLabels": service["spec"]["selector"]}, api["spec"]["template"]["metadata"]["labels"]
    )
    (port,) = service["spec"]["ports"]
    assert port["targetPort"] in ports or port["targetPort"] in ports.values()
    # Every replica sees the same checkpoints and code archives.
    (volume,) = [
        v for v in api["spec"]["template"]["spec"]["volumes"] if "persistentVolumeClaim" in v
    ]
    claim = one(resources, "PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"])
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    env = {e["name"]: e for e in c["env"]}
    data_dir = env["TUNEYARD_DATA_DIR"]["value"]
    assert any(
        m["mountPath"] == data_dir and m["name"] == volume["name"] for m in c["volumeMounts"]
    )


def test_the_dispatcher_is_one_and_reaches_the_api_service() -> None:
    resources = render("base")
    dispatcher = one(resources, "Deployment", "tuneyard-dispatcher")
    assert dispatcher["spec"]["replicas"] == 1
    assert dispatcher["spec"]["strategy"]["type"] == "Recreate"
    env = {e["name"]: e for e in container(dispatcher["spec"]["template"])["env"]}
    # It works on the database, so it holds the URL; it needs no token.
    assert env["TUNEYARD_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"] == "tuneyard-server"
    assert "TUNEYARD_TOKEN" not in env
    url = urlsplit(env["TUNEYARD_API_URL"]["value"])
    service = one(resources, "Service", "tuneyard-api")
    assert url.hostname == service["metadata"]["name"]
    assert url.port in {p["port"] for p in service["spec"]["ports"]}


@pytest.mark.parametrize(("app", "migrate"), INSTALLATIONS)
def test_every_container_has_resources(app: str, migrate: str) -> None:
    for where, template in pod_templates(render(app, migrate, "redis")):
        for c in template["spec"]["containers"] + template["spec"].get("initContainers", []):
            res = c.get("resources", {})
            assert {"cpu", "memory"} <= set(res.get("requests", {})), (where, c["name"])
            assert "memory" in res.get("limits", {}), (where, c["name"])
    redis = container(component(render("redis"), "redis"))
    assert "readinessProbe" in redis and "livenessProbe" in redis


@pytest.mark.parametrize(("app", "migrate"), INSTALLATIONS)
def test_pods_run_unprivileged_without_a_kubernetes_token(app: str, migrate: str) -> None:
    resources = render(app, migrate, "redis")
    accounts = {r["metadata"]["name"]: r for r in resources if r["kind"] == "ServiceAccount"}
    for where, template in pod_templates(resources):
        spec = template["spec"]
        assert spec["automountServiceAccountToken"] is False, where
        account = accounts[spec["serviceAccountName"]]
        assert account["automountServiceAccountToken"] is False, where
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] != 0, where
        assert pod["seccompProfile"]["type"] == "RuntimeDefault", where
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, (where, c["name"])
            assert sc["readOnlyRootFilesystem"] is True, (where, c["name"])
            assert sc["capabilities"]["drop"] == ["ALL"], (where, c["name"])
            assert not sc.get("privileged") and sc.get("runAsUser", 1) != 0, (where, c["name"])


@pytest.mark.parametrize(("app", "migrate"), INSTALLATIONS)
def test_the_images_agree(app: str, migrate: str) -> None:
    """One server image for the migration, the API and the dispatcher; the worker image
    (deploy/worker.Dockerfile) of the same tag, so it holds the same tuneyard."""
    resources = render(app, migrate)
    image = {
        name: container(component(resources, name))["image"]
        for name in ("api", "dispatcher", "migrate", "worker")
    }
    assert image["api"] == image["dispatcher"] == image["migrate"], image

    def split(ref: str) -> tuple[str, str]:
        """(repository, tag) of an image reference; a registry's port is not a tag."""
        if ":" not in ref.rsplit("/", 1)[-1]:
            return ref, ""
        name, _, tag = ref.rpartition(":")
        return name, tag

    server, tag = split(image["api"])
    worker, worker_tag = split(image["worker"])
    assert worker_tag == tag and worker != server, image
    if app != "base":
        assert tag and tag != "latest", image  # an installation pins what it runs


@pytest.mark.parametrize("names", [("base", "keda"), ("overlays/example",)])
def test_keda_scales_the_workers_on_the_queue_they_serve(names: tuple[str, ...]) -> None:
    resources = render(*names)
    scaled = one(resources, "ScaledObject", "tuneyard-worker")
    target = scaled["spec"]["scaleTargetRef"]
    worker = one(resources, "Deployment", target["name"])
    assert target.get("kind", "Deployment") == "Deployment"
    assert target.get("apiVersion", "apps/v1") == "apps/v1"
    assert worker["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"] == (
        "worker"
    )
    # KEDA owns the count: applying the manifests again must not reset it.
    assert "replicas" not in worker["spec"]

    # The keys RQ itself keeps the worker's queue in: waiting jobs, and jobs started.
    queue = worker_params(resources)["queue"]
    redis = Redis()  # never connected: only its key names are asked for
    keys = {
        Queue(queue, connection=redis).key: "queued",
        StartedJobRegistry(queue, connection=redis).key: "running",
    }
    triggers = {t["metadata"]["listName"]: t for t in scaled["spec"]["triggers"]}
    assert set(triggers) == set(keys), (set(triggers), queue)
    for key, name in keys.items():
        assert triggers[key]["name"] == name
    # Workers wanted: the ones busy plus the jobs waiting for one.
    modifiers = scaled["spec"]["advanced"]["scalingModifiers"]
    assert modifiers["formula"].replace(" ", "") in ("queued+running", "running+queued")
    assert modifiers["target"] == "1"

    for trigger in triggers.values():
        auth = one(resources, "TriggerAuthentication", trigger["authenticationRef"]["name"])
        refs = {ref["parameter"]: ref for ref in auth["spec"]["secretTargetRef"]}
        assert {"address", "password"} <= set(refs)
        assert {ref["name"] for ref in refs.values()} == {"tuneyard-redis"}


def _count_while_running(queue: str) -> dict[str, Any]:
    """An RQ job that reports what KEDA's redis trigger would count while it runs."""
    from rq import get_current_job

    job = get_current_job()
    assert job is not None
    redis = job.connection
    started = StartedJobRegistry(queue, connection=redis).key
    waiting = Queue(queue, connection=redis).key
    return {
        "started_type": redis.type(started),
        "started": redis.zcard(started),
        "waiting": redis.llen(waiting),
    }


@pytest.mark.redis
def test_the_keys_keda_counts_are_the_ones_rq_fills(redis_url: str) -> None:
    """KEDA's redis trigger counts a list by LLEN and a sorted set by ZCARD: a slot job waits
    in the first and, once a worker took it, is in the second (and no longer in the first)."""
    from rq import SimpleWorker

    class Worker(SimpleWorker):
        """Without RQ's command listener (stop and kill over pub/sub): nothing here sends a
        command, and its thread takes up to a minute to stop."""

        def subscribe(self) -> None:
            pass

    queue_name = worker_params(render("overlays/example"))["queue"]
    redis = Redis.from_url(redis_url)
    queue = Queue(queue_name, connection=redis)
    job = queue.enqueue(_count_while_running, queue_name)
    assert redis.type(queue.key) == b"list" and redis.llen(queue.key) == 1
    Worker([queue], connection=redis).work(burst=True)
    job.refresh()
    assert job.return_value() == {"started_type": b"zset", "started": 1, "waiting": 0}
    assert redis.zcard(StartedJobRegistry(queue_name, connection=redis).key) == 0


def test_workers_reach_only_the_api_redis_and_dns() -> None:
    resources = render("base", "redis")
    labels = {name: component(resources, name)["metadata"]["labels"] for name in ("worker", "api")}
    redis_pod = component(resources, "redis")
    api_port = container(component(resources, "api"))["ports"][0]["containerPort"]
    redis_port = container(redis_pod)["ports"][0]["containerPort"]
    policies = [
        p
        for p in resources
        if p["kind"] == "NetworkPolicy" and selects(p["spec"]["podSelector"], labels["worker"])
    ]
    (policy,) = policies
    spec = policy["spec"]
    assert set(spec["policyTypes"]) == {"Ingress", "Egress"}
    assert not spec.get("ingress")
    allowed: set[tuple[str, int]] = set()
    for rule in spec["egress"]:
        assert rule.get("to"), f"a rule to anywhere: {rule}"
        ports = {p["port"] for p in rule["ports"]}
        for peer in rule["to"]:
            assert "ipBlock" not in peer, peer
            pods = peer["podSelector"]
            if "namespaceSelector" in peer:
                ns = peer["namespaceSelector"]["matchLabels"]
                assert ns == {"kubernetes.io/metadata.name": "kube-system"}
                assert pods["matchLabels"] == {"k8s-app": "kube-dns"}
                assert ports == {53}
                allowed.add(("dns", 53))
            elif selects(pods, labels["api"]):
                assert ports == {api_port}
                allowed.add(("api", api_port))
            elif selects(pods, redis_pod["metadata"]["labels"]):
                assert ports == {redis_port}
                allowed.add(("redis", redis_port))
            else:
                pytest.fail(f"workers may reach pods {pods}")
    assert allowed == {("dns", 53), ("api", api_port), ("redis", redis_port)}

    # Redis in the cluster takes connections from tuneyard's processes (and KEDA) only.
    (redis_policy,) = [
        p
        for p in resources
        if p["kind"] == "NetworkPolicy"
        and selects(p["spec"]["podSelector"], redis_pod["metadata"]["labels"])
    ]
    peers = [peer for rule in redis_policy["spec"]["ingress"] for peer in rule["from"]]
    for name in ("api", "dispatcher", "worker"):
        pod_labels = component(resources, name)["metadata"]["labels"]
        assert any("podSelector" in p and selects(p["podSelector"], pod_labels) for p in peers)
    for peer in peers:
        assert "ipBlock" not in peer and (peer.get("podSelector") or peer.get("namespaceSelector"))


def secret_refs(resources: list[dict[str, Any]]) -> set[tuple[str, str]]:
    """(Secret, key) of every reference: containers' env, TriggerAuthentications."""
    refs = set()
    for _, template in pod_templates(resources):
        for c in template["spec"]["containers"]:
            for e in c.get("env", []):
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    refs.add((ref["name"], ref["key"]))
    for r in resources:
        if r["kind"] == "TriggerAuthentication":
            refs |= {(ref["name"], ref["key"]) for ref in r["spec"]["secretTargetRef"]}
    return refs


def documented_secrets() -> set[tuple[str, str]]:
    """The (Secret, key) pairs deploy/kubernetes/README.md's `kubectl create secret` lines make."""
    text = (K8S / "README.md").read_text().replace("\\\n", " ")
    made = set()
    for line in text.splitlines():
        words = shlex.split(line) if "create secret generic" in line else []
        if not words:
            continue
        name = words[words.index("generic") + 1]
        for word in words:
            m = re.fullmatch(r"--from-(?:file|literal)=([^=]+)=.*", word)
            if m:
                made.add((name, m.group(1)))
    return made


def test_the_readme_makes_the_secrets_the_manifests_read() -> None:
    used = secret_refs(render("overlays/example", "overlays/example/migrate"))
    assert documented_secrets() == used
    assert {key for name, key in used if name == WORKER_SECRET} == set(WORKER_KEYS.values())
    readme = (ROOT / "README.md").read_text()
    deployment = readme[readme.index("## Deployment") : readme.index("## Layout")]
    assert "### Kubernetes" in deployment and "deploy/kubernetes" in deployment
