"""Talking to the API server without the ``kubernetes`` client: kopf's own login helpers.

``login`` picks the credentials: the kubeconfig named by ``KUBECONFIG`` (or ``.run/kubeconfig``,
which ``__main__`` exports), else the in-cluster service account. Paths in a kubeconfig are
made absolute relative to the kubeconfig file, as kubectl does (kopf's minimal parser would
take them relative to the working directory).

``ensure_peering`` creates the kopf peering object the replicas keep their keep-alives in,
before kopf starts watching (kopf's own API client only starts after the startup handlers, so
this one request goes through a short-lived aiohttp session built from the same credentials).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

import aiohttp
import kopf

_PATH_FIELDS = ("ca_path", "certificate_path", "private_key_path")


def _absolute(info: kopf.ConnectionInfo, kubeconfig: str) -> kopf.ConnectionInfo:
    base = Path(kubeconfig.split(os.pathsep)[0]).expanduser().resolve().parent
    changes = {}
    for field in _PATH_FIELDS:
        value = getattr(info, field)
        if value and not Path(os.fsdecode(value)).expanduser().is_absolute():
            changes[field] = str(base / os.fsdecode(value))
    return dataclasses.replace(info, **changes) if changes else info


def login(*, settings: kopf.OperatorSettings, logger: logging.Logger | None = None) -> kopf.ConnectionInfo:
    kubeconfig = os.environ.get("KUBECONFIG")
    if kubeconfig:
        info = kopf.login_with_kubeconfig(settings=settings)
        if info is None:
            raise kopf.LoginError(f"no credentials in KUBECONFIG={kubeconfig}")
        return _absolute(info, kubeconfig)
    info = kopf.login_with_service_account(settings=settings)
    if info is None:
        info = kopf.login_with_kubeconfig(settings=settings)  # ~/.kube/config
    if info is None:
        raise kopf.LoginError("no KUBECONFIG, no .run/kubeconfig, and not in a cluster (no service account)")
    return info


def session(info: kopf.ConnectionInfo) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        base_url=info.server.rstrip("/") + "/",
        connector=aiohttp.TCPConnector(ssl=info.as_ssl_context()),
        headers=info.as_http_headers(),
        timeout=aiohttp.ClientTimeout(total=15),
    )


async def ensure_peering(
    info: kopf.ConnectionInfo, *, name: str, namespaces: list[str], logger: logging.Logger
) -> bool:
    """Create the peering object(s) when missing; False if the CRD is absent or we may not."""
    if namespaces:
        targets = [(f"apis/kopf.dev/v1/namespaces/{ns}/kopfpeerings", "KopfPeering", ns) for ns in namespaces]
    else:
        targets = [("apis/kopf.dev/v1/clusterkopfpeerings", "ClusterKopfPeering", None)]
    ok = True
    async with session(info) as http:
        for url, kind, namespace in targets:
            metadata = {"name": name, **({"namespace": namespace} if namespace else {})}
            body = {"apiVersion": "kopf.dev/v1", "kind": kind, "metadata": metadata}
            async with http.post(url, json=body) as response:
                where = f"{kind} {namespace + '/' if namespace else ''}{name}"
                if response.status in (200, 201):
                    logger.info(f"created the peering object {where}")
                elif response.status == 409:
                    logger.debug(f"peering object {where} exists")
                elif response.status == 403 and await _exists(http, f"{url}/{name}"):
                    logger.debug(f"peering object {where} exists (we may not create it, nor need to)")
                elif response.status == 404:
                    logger.warning(f"no {kind} CRD (kopf.dev): install manifests/crd/kopf-peering.yaml for peering")
                    ok = False
                else:
                    logger.warning(f"could not create {where}: HTTP {response.status} {await response.text()}")
                    ok = False
    return ok


async def _exists(http: aiohttp.ClientSession, url: str) -> bool:
    async with http.get(url) as response:
        return response.status == 200


async def served(info: kopf.ConnectionInfo, group_version_url: str, plural: str) -> bool:
    """Whether the API server serves ``plural`` under ``apis/<group>/<version>`` (discovery)."""
    async with session(info) as http:
        async with http.get(group_version_url) as response:
            if response.status != 200:
                return False
            return any(r.get("name") == plural for r in (await response.json()).get("resources", []))
