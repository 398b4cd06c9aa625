"""The local cluster's own pieces that can be checked without starting it (k8s/tools/cluster.py);
`task k8s:e2e` runs the rest for real."""

import hashlib
import io
import json
import sys
import tarfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "k8s" / "tools"))
import cluster  # noqa: E402
import e2e  # noqa: E402


def test_an_image_archive_is_what_ctr_import_reads(tmp_path):
    """`docker save` form: manifest.json naming the tag, a config whose diff_id is the layer's
    digest, and the files in the layer with their modes."""
    path = cluster.image_archive(tmp_path / "pause.tar", "registry.k8s.io/pause:test",
                                 {"/pause": (b"\x7fELF binary", 0o755), "/etc/motd": (b"hola\n", 0o644)}, ["/pause"])
    with tarfile.open(path) as archive:
        [manifest] = json.load(archive.extractfile("manifest.json"))
        layer = archive.extractfile(manifest["Layers"][0]).read()
        config = json.load(archive.extractfile(manifest["Config"]))
    assert manifest["RepoTags"] == ["registry.k8s.io/pause:test"]
    assert config["rootfs"] == {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer).hexdigest()]}
    assert config["config"]["Entrypoint"] == ["/pause"] and config["config"]["User"] == "65535:65535"
    with tarfile.open(fileobj=io.BytesIO(layer)) as files:
        assert {(m.name, m.mode) for m in files.getmembers()} == {("pause", 0o755), ("etc/motd", 0o644)}
        assert files.extractfile("pause").read() == b"\x7fELF binary"


def test_down_removes_only_the_pod_namespaces_its_containerd_made(tmp_path, monkeypatch):
    """The pods' network namespaces outlive their containers; `down` deletes those this cluster's
    containerd recorded, and no other namespace of the machine."""
    monkeypatch.setattr(cluster, "RUN", tmp_path)
    meta = tmp_path / "containerd" / "root" / "io.containerd.metadata.v1.bolt" / "meta.db"
    meta.parent.mkdir(parents=True)
    ours = ["cni-0a1b2c3d-0000-1111-2222-333344445555", "cni-ffffffff-9999-8888-7777-666655554444"]
    meta.write_bytes(b"\x00bolt" + b"".join(b"\x00/var/run/netns/" + n.encode() + b"\x01" for n in ours) + b"\x00")
    assert cluster._pod_network_namespaces() == set(ours)
    meta.unlink()
    assert cluster._pod_network_namespaces() == set()


def test_the_e2e_overlay_runs_the_images_e2e_builds():
    """k8s/overlays/e2e names the Kafka and FerretDB images by tag; e2e.py tags what it builds
    from the local stack's versions: a version bump on one side only would leave a pod unable to
    find its image."""
    overlay = cluster.kube.K8S / "overlays" / "e2e"
    kustomization = yaml.safe_load((overlay / "kustomization.yaml").read_text())
    [kafka] = [i for i in kustomization["images"] if i["name"] == "apache/kafka"]
    assert f"{kafka['newName']}:{kafka['newTag']}" == e2e.KAFKA_IMAGE
    database = yaml.safe_load((overlay / "database.yaml").read_text())
    [container] = database["spec"]["template"]["spec"]["containers"]
    assert container["image"] == e2e.FERRETDB_IMAGE


def test_keda_is_installed_with_the_operator_and_adapter_images_e2e_builds(tmp_path):
    """KEDA's own manifests (the keda module's config/) run the operator and metrics adapter images
    that e2e.py builds and loads into the node, never pulled (the node reaches no registry), and
    register the adapter as the external metrics API, whose certificate the operator patches in."""
    rendered = cluster.kube.render(cluster.kube.kubectl(), e2e.keda_install(tmp_path))
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    containers = {d["metadata"]["name"]: d["spec"]["template"]["spec"]["containers"]
                  for d in docs if d["kind"] == "Deployment"}
    assert set(containers) == {"keda-operator", "keda-metrics-apiserver"}
    [operator], [adapter] = containers["keda-operator"], containers["keda-metrics-apiserver"]
    assert (operator["image"], adapter["image"]) == (e2e.KEDA_IMAGE, e2e.KEDA_ADAPTER_IMAGE)
    assert operator["imagePullPolicy"] == adapter["imagePullPolicy"] == "IfNotPresent"
    assert {operator["command"][0], adapter["command"][0]} == {f"/{binary}" for binary in cluster.KEDA_COMMANDS}
    assert "--enable-apiservice-patching=false" not in operator["args"]
    [api] = [d for d in docs if d["kind"] == "APIService"]
    assert api["metadata"]["name"] == "v1beta1.external.metrics.k8s.io"
    assert api["spec"]["service"] == {"name": "keda-metrics-apiserver", "namespace": "keda"}
    crds = {d["metadata"]["name"] for d in docs if d["kind"] == "CustomResourceDefinition"}
    assert {"scaledobjects.keda.sh", "triggerauthentications.keda.sh"} <= crds
