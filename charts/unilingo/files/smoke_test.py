"""`helm test`: submit a PDF job to the API and wait until it succeeds.

Runs in the app image. The bearer token is minted by `python -m unilingo.tokens` with the
JWT secret the pod reads from the credentials Secret (SUPABASE_JWT_SECRET); nothing secret
is in the chart. Environment: API_URL (the API Service), TEST_TIMEOUT_SECONDS.
"""

import os
import subprocess
import sys
import time

import httpx

MARKER = "unilingo helm test"


def pdf_with_text(text: str) -> bytes:
    """A minimal valid one-page PDF with one Helvetica text line."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def main() -> int:
    api = os.environ["API_URL"].rstrip("/")
    timeout = float(os.environ.get("TEST_TIMEOUT_SECONDS", "180"))
    token = subprocess.run(
        [sys.executable, "-m", "unilingo.tokens", "--user", "helm-test", "--ttl", "900"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    headers = {"Authorization": f"Bearer {token}"}
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=api, headers=headers, timeout=10.0) as client:
        # The API may still be starting right after an install.
        while True:
            try:
                if client.get("/api/health").status_code == 200:
                    break
            except httpx.HTTPError as exc:
                print(f"waiting for the API: {exc}", flush=True)
            if time.monotonic() > deadline:
                print("FAIL: the API never became healthy", flush=True)
                return 1
            time.sleep(2)
        answer = client.post(
            "/api/process-pdf",
            files={"file": ("helm-test.pdf", pdf_with_text(MARKER), "application/pdf")},
        )
        print(f"POST /api/process-pdf -> {answer.status_code} {answer.text}", flush=True)
        if answer.status_code != 202:
            return 1
        job_id = answer.json()["job_id"]
        status = "queued"
        while time.monotonic() < deadline:
            job = client.get(f"/api/jobs/{job_id}").json()
            if job.get("status") != status:
                status = job.get("status")
                print(f"job {job_id}: {status}", flush=True)
            if status == "succeeded":
                text = (job.get("result") or {}).get("text", "")
                if MARKER not in text:
                    print(f"FAIL: the result does not contain the PDF's text: {job}", flush=True)
                    return 1
                print("PASS", flush=True)
                return 0
            if status in ("failed", "cancelled"):
                print(f"FAIL: {job}", flush=True)
                return 1
            time.sleep(1)
    print(f"FAIL: job {job_id} not finished after {timeout:.0f}s (last status {status})", flush=True)
    return 1


if __name__ == "__main__":
    sys.exit(main())
