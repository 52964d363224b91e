#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
# Offline check of Kubernetes manifests against the API models of the official Python client
# (Debian: python3-kubernetes, python3-yaml): every key must be a field of its model (a
# misspelled key fails), every value of the field's type, every required field present,
# resource quantities parseable; plus the cross-references the API server or kubelet would
# reject: selectors that match the pod labels, volume mounts and probe ports that exist,
# ConfigMaps that the set defines. Usage: validate.py FILE.yaml...   exit 0 ok, 1 errors.
import re
import sys

import yaml
from kubernetes import client
from kubernetes.utils import parse_quantity

KINDS = {  # (apiVersion, kind) -> model
    ("v1", "Namespace"): client.V1Namespace,
    ("v1", "ConfigMap"): client.V1ConfigMap,
    ("v1", "Service"): client.V1Service,
    ("v1", "PersistentVolumeClaim"): client.V1PersistentVolumeClaim,
    ("apps/v1", "DaemonSet"): client.V1DaemonSet,
    ("apps/v1", "Deployment"): client.V1Deployment,
    ("batch/v1", "Job"): client.V1Job,
    ("scheduling.k8s.io/v1", "PriorityClass"): client.V1PriorityClass,
}
PRIMITIVE = {"str": (str,), "int": (int,), "float": (int, float), "bool": (bool,)}


class Checker:
    def __init__(self):
        self.errors = []

    def err(self, where, msg):
        self.errors.append("%s: %s" % (where, msg))

    def value(self, where, typ, v):
        """Check v against the client's type string; return the value to build the model."""
        if v is None:
            return None
        if typ in PRIMITIVE:
            ok = isinstance(v, PRIMITIVE[typ]) and not (typ != "bool" and isinstance(v, bool))
            if not ok:
                self.err(where, "expected %s, got %s %r" % (typ, type(v).__name__, v))
            return v
        if typ == "object":  # IntOrString and free-form fields
            return v
        if typ == "datetime":
            return v
        m = re.fullmatch(r"list\[(.+)\]", typ)
        if m:
            if not isinstance(v, list):
                self.err(where, "expected a list, got %s" % type(v).__name__)
                return None
            return [self.value("%s[%d]" % (where, i), m.group(1), x) for i, x in enumerate(v)]
        m = re.fullmatch(r"dict\(str, (.+)\)", typ)
        if m:
            if not isinstance(v, dict):
                self.err(where, "expected a map, got %s" % type(v).__name__)
                return None
            return {k: self.value("%s.%s" % (where, k), m.group(1), x) for k, x in v.items()}
        cls = getattr(client, typ, None)
        if cls is None:
            self.err(where, "unknown model type %s" % typ)
            return None
        return self.model(where, cls, v)

    def model(self, where, cls, v):
        if not isinstance(v, dict):
            self.err(where, "expected an object (%s), got %s" % (cls.__name__, type(v).__name__))
            return None
        by_json = {j: p for p, j in cls.attribute_map.items()}
        kwargs = {}
        for k, x in v.items():
            if k not in by_json:
                self.err(where, "unknown field '%s' in %s" % (k, cls.__name__))
                continue
            p = by_json[k]
            kwargs[p] = self.value("%s.%s" % (where, k), cls.openapi_types[p], x)
        try:  # the models' setters reject missing required fields and bad enum values
            return cls(**kwargs)
        except (ValueError, TypeError) as e:
            self.err(where, str(e))
            return None


def pod_spec(doc):
    kind = doc.get("kind")
    if kind in ("Deployment", "DaemonSet", "Job"):
        return (((doc.get("spec") or {}).get("template") or {}).get("spec")) or {}
    return None


def cross_checks(ck, name, doc, configmaps, priorities):
    kind = doc.get("kind")
    spec = doc.get("spec") or {}
    if kind in ("Deployment", "DaemonSet"):
        sel = ((spec.get("selector") or {}).get("matchLabels")) or {}
        labels = (((spec.get("template") or {}).get("metadata") or {}).get("labels")) or {}
        if not sel:
            ck.err(name, "spec.selector.matchLabels is empty")
        for k, v in sel.items():
            if labels.get(k) != v:
                ck.err(name, "selector %s=%s does not match the pod template labels" % (k, v))
    ps = pod_spec(doc)
    if ps is None:
        return
    vols = {v.get("name") for v in ps.get("volumes") or []}
    pc = ps.get("priorityClassName")
    if pc and pc not in priorities | {"system-node-critical", "system-cluster-critical"}:
        ck.err(name, "priorityClassName '%s' is not defined" % pc)
    for c in (ps.get("initContainers") or []) + (ps.get("containers") or []):
        cw = "%s container %s" % (name, c.get("name"))
        if not c.get("image"):
            ck.err(cw, "no image")
        for m in c.get("volumeMounts") or []:
            if m.get("name") not in vols:
                ck.err(cw, "volumeMount '%s' names no volume of the pod" % m.get("name"))
        ports = set()
        for p in c.get("ports") or []:
            ports.add(p.get("containerPort"))
            if p.get("name"):
                ports.add(p.get("name"))
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            pr = c.get(probe) or {}
            port = (pr.get("httpGet") or pr.get("tcpSocket") or {}).get("port")
            if port is not None and port not in ports:
                ck.err(cw, "%s port %r is not a port of the container" % (probe, port))
        for ef in c.get("envFrom") or []:
            ref = (ef.get("configMapRef") or {}).get("name")
            if ref and ref not in configmaps:
                ck.err(cw, "envFrom configMapRef '%s' is not defined" % ref)
        for key in ("requests", "limits"):
            for r, q in ((c.get("resources") or {}).get(key) or {}).items():
                try:
                    parse_quantity(q)
                except (ValueError, TypeError):
                    ck.err(cw, "resources.%s.%s: bad quantity %r" % (key, r, q))
        req = (c.get("resources") or {}).get("requests") or {}
        lim = (c.get("resources") or {}).get("limits") or {}
        for r in set(req) & set(lim):
            try:
                if parse_quantity(req[r]) > parse_quantity(lim[r]):
                    ck.err(cw, "resources: request of %s above its limit" % r)
            except (ValueError, TypeError):
                pass


def main(paths):
    ck = Checker()
    docs = []
    for path in paths:
        try:
            with open(path) as f:
                for i, d in enumerate(yaml.safe_load_all(f)):
                    if d is not None:
                        docs.append(("%s#%d" % (path, i), d))
        except (OSError, yaml.YAMLError) as e:
            ck.err(path, str(e))
    configmaps = {(d.get("metadata") or {}).get("name") for _, d in docs
                  if isinstance(d, dict) and d.get("kind") == "ConfigMap"}
    priorities = {(d.get("metadata") or {}).get("name") for _, d in docs
                  if isinstance(d, dict) and d.get("kind") == "PriorityClass"}
    for where, d in docs:
        if not isinstance(d, dict):
            ck.err(where, "not an object")
            continue
        cls = KINDS.get((d.get("apiVersion"), d.get("kind")))
        if cls is None:
            ck.err(where, "unsupported apiVersion/kind %s/%s" % (d.get("apiVersion"),
                                                                d.get("kind")))
            continue
        name = "%s %s/%s" % (where, d.get("kind"), (d.get("metadata") or {}).get("name"))
        if not (d.get("metadata") or {}).get("name"):
            ck.err(name, "metadata.name is required")
        ck.model(name, cls, d)
        cross_checks(ck, name, d, configmaps, priorities)
    for e in ck.errors:
        print("error:", e)
    print("%d documents, %d errors" % (len(docs), len(ck.errors)))
    return 1 if ck.errors or not docs else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
