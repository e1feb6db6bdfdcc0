#!/usr/bin/env python3
"""Writes a synthetic OCI image layout for the scale benchmarks.

    scripts/oci-synthetic-layout.py DIR IMAGES [LAYERS] [BASE_BYTES]

IMAGES images tagged img0 .. img<IMAGES-1>, each of LAYERS (default 5) uncompressed
tar layers: the first is one shared base of BASE_BYTES (default 1 MiB) random bytes,
the others one small file of the image's own. Every blob is named by its sha256, as
the image-spec asks; the same arguments give the same layout except for the random
bytes.
"""
import hashlib, io, json, os, sys, tarfile

def blob(root, data, media_type):
    d = hashlib.sha256(data).hexdigest()
    path = os.path.join(root, "blobs", "sha256", d)
    if not os.path.exists(path):
        with open(path, "wb") as f:
            f.write(data)
    return {"mediaType": media_type, "digest": "sha256:" + d, "size": len(data)}

def layer(name, data):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = len(data), 0, 0o644
        t.addfile(info, io.BytesIO(data))
    return buf.getvalue()

def main():
    root, n = sys.argv[1], int(sys.argv[2])
    layers = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    base_bytes = int(sys.argv[4]) if len(sys.argv) > 4 else 1 << 20
    os.makedirs(os.path.join(root, "blobs", "sha256"), exist_ok=True)
    with open(os.path.join(root, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    lt = "application/vnd.oci.image.layer.v1.tar"
    base = layer("base/data", os.urandom(base_bytes))
    base_desc = blob(root, base, lt)
    manifests = []
    for i in range(n):
        descs, diff_ids = [base_desc], [base_desc["digest"]]
        for j in range(1, layers):
            data = layer(f"img{i}/layer{j}", os.urandom(512) + f"{i}.{j}".encode())
            d = blob(root, data, lt)
            descs.append(d)
            diff_ids.append(d["digest"])
        config = json.dumps({
            "architecture": "amd64", "os": "linux",
            "config": {"Cmd": ["/bin/true"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }, sort_keys=True).encode()
        manifest = json.dumps({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": blob(root, config, "application/vnd.oci.image.config.v1+json"),
            "layers": descs,
        }, sort_keys=True).encode()
        m = blob(root, manifest, "application/vnd.oci.image.manifest.v1+json")
        m["annotations"] = {"org.opencontainers.image.ref.name": f"img{i}"}
        manifests.append(m)
    with open(os.path.join(root, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "manifests": manifests}, f)

main()
