#!/usr/bin/env python3
"""Writes the approval fixtures of examples/identity/approvals from the templates
beside them (`*.json.in`, whose approvals are written as the object a
verified token reads as): each approval becomes an approval token (compact
JWS, EdDSA) signed with approver.pem, and each case gets a twin whose
token is signed by the requester itself (a self-approval, which does not
count). Also writes trust.json and jwks.json.

    python3 examples/identity/approvals/mint.py    # needs openssl 3 (Ed25519 -rawin)

The tokens are fixed text: `writ test --trust examples/identity/approvals/trust.json
--at 2026-11-22T10:00:00Z examples/identity/approvals` checks them at that time.
"""
import base64
import json
import pathlib
import subprocess
import tempfile

HERE = pathlib.Path(__file__).resolve().parent
AT = 1795341600  # 2026-11-22T10:00:00Z, the fixtures' environment.time


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign(claims: dict) -> str:
    header = {"alg": "EdDSA", "typ": "JWT", "kid": "approver-1"}
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    # openssl 3.0 signs raw Ed25519 input from a file only (-in).
    with tempfile.NamedTemporaryFile() as data:
        data.write(signing_input.encode())
        data.flush()
        signature = subprocess.run(
            ["openssl", "pkeyutl", "-sign", "-inkey", str(HERE / "approver.pem"),
             "-rawin", "-in", data.name],
            capture_output=True,
            check=True,
        ).stdout
    return f"{signing_input}.{b64(signature)}"


def public_x() -> str:
    der = subprocess.run(
        ["openssl", "pkey", "-in", str(HERE / "approver.pem"), "-pubout", "-outform", "DER"],
        capture_output=True,
        check=True,
    ).stdout
    return b64(der[-32:])


def token_for(approval: dict, approver=None) -> str:
    return sign({
        "iss": "https://approvals.test",
        "aud": "writ",
        "sub": approver or approval["approver"],
        "action": approval["action"],
        "resource": approval["resource"],
        "iat": AT - 60,
        "exp": AT + 1800,
    })


def valid_cases(name: str):
    fixture = json.loads((HERE / f"{name}.in").read_text())
    cases = []
    for case in fixture["cases"]:
        approval = case["request"].get("context", {}).get("approval")
        if not (isinstance(approval, dict) and approval.get("verified") is True
                and isinstance(approval.get("approver"), str) and "expires" in approval
                and isinstance(approval.get("expires"), str)):
            continue
        case = json.loads(json.dumps(case))
        case["request"]["context"]["approval"] = token_for(approval)
        cases.append(case)
        # The same approval given by the subject itself does not count.
        self_case = json.loads(json.dumps(case))
        self_case["name"] = case["name"].split(":")[0].replace("does not fire", "fires") + \
            ": the same approval signed by the requester itself (self-approval) does not count"
        self_case["request"]["context"]["approval"] = token_for(
            approval, approver=case["request"]["subject"]["id"])
        expect = self_case["expect"]
        expect.pop("no_obligations", None)
        obligations = expect.get("obligations")
        if isinstance(obligations, list):
            if "approval" not in obligations:
                obligations.append("approval")
        else:
            expect["obligations"] = {"contains": ["approval"]}
        cases.append(self_case)
    out = {k: v for k, v in fixture.items() if k != "cases"}
    if "policies" in out:
        out["policies"] = ["default" if p == "default" else f"../../../tests/pack/{p}" for p in out["policies"]]
    out["cases"] = cases
    return out


def main():
    (HERE / "jwks.json").write_text(json.dumps({"keys": [
        {"kty": "OKP", "crv": "Ed25519", "kid": "approver-1", "alg": "EdDSA", "x": public_x()}
    ]}, indent=2) + "\n")
    (HERE / "trust.json").write_text(json.dumps({
        "issuers": [],
        "accept_broker_attestation": True,
        "approval_issuers": [{
            "issuer": "https://approvals.test",
            "jwks_file": "jwks.json",
            "algorithms": ["EdDSA"],
            "audiences": ["writ"],
            "max_age": "1h",
        }],
    }, indent=2) + "\n")
    for name in ["approval-verified.json", "approval-verified-agent.json"]:
        (HERE / name).write_text(json.dumps(valid_cases(name), indent=2) + "\n")


if __name__ == "__main__":
    main()
