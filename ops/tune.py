"""`python -m ops tune KEY=VALUE ...`: change the running lb's admission policy live.

Talks to the admin listener of the stack `python -m ops up` runs (or --admin URL), with the
token `ops up` wrote to VAR/admin_token (or LB_ADMIN_TOKEN). Keys are the environment's
names (BUCKET_CAPACITY, LEAK_RATE, LB_RATE_RULES, LB_RATE_DRY_RUN) or the API's
(bucket_capacity, leak_rate, rules, dry_run); keys left out keep their value.

    python -m ops tune                           # show the policy in force
    python -m ops tune BUCKET_CAPACITY=40 LEAK_RATE=20
    python -m ops tune --preview BUCKET_CAPACITY=5   # what it would have rejected lately
    python -m ops tune --reset                   # back to the lb's environment
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

KEYS = {
    "BUCKET_CAPACITY": "bucket_capacity",
    "LEAK_RATE": "leak_rate",
    "LB_RATE_RULES": "rules",
    "LB_RATE_DRY_RUN": "dry_run",
}


def parse_assignments(items: list[str]) -> dict[str, str]:
    """KEY=VALUE arguments as the admin API's fields; ValueError naming a bad one."""
    body: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        field = KEYS.get(key.strip().upper()) or (
            key.strip().lower() if key.strip().lower() in KEYS.values() else None
        )
        if not sep or field is None:
            raise ValueError(f"{item!r}: expected KEY=VALUE with KEY one of {', '.join(KEYS)}")
        body[field] = value.strip()
    return body


def read_token(var: Path, environ: Mapping[str, str]) -> str:
    token = environ.get("LB_ADMIN_TOKEN", "").strip()
    if token:
        return token
    try:
        return (var / "admin_token").read_text().strip()
    except OSError:
        return ""


def call(url: str, method: str, token: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json", "X-Admin-User": os.environ.get("USER", "ops")}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=15) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return exc.code, json.loads(raw)
        except ValueError:
            return exc.code, {"detail": raw.decode(errors="replace")}


def describe(policy: Mapping[str, Any]) -> str:
    return (
        f"admission policy v{policy.get('version')} ({policy.get('scope', '')}), "
        f"set by {policy.get('set_by')}:\n"
        f"  BUCKET_CAPACITY={policy.get('bucket_capacity')}\n"
        f"  LEAK_RATE={policy.get('leak_rate')}\n"
        f"  LB_RATE_RULES={policy.get('rules')}\n"
        f"  LB_RATE_DRY_RUN={int(bool(policy.get('dry_run')))}"
    )


def main(argv: list[str], environ: Mapping[str, str] = os.environ) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ops tune", description="Change the running lb's admission policy live."
    )
    parser.add_argument("assignments", nargs="*", metavar="KEY=VALUE")
    parser.add_argument(
        "--admin",
        default=environ.get("LB_ADMIN_URL", "http://127.0.0.1:9100"),
        help="the lb's admin listener (default LB_ADMIN_URL or http://127.0.0.1:9100)",
    )
    parser.add_argument("--var", type=Path, default=Path("var"), help="where admin_token is")
    parser.add_argument("--preview", action="store_true", help="only say what it would reject")
    parser.add_argument("--minutes", type=float, default=5.0, help="preview look-back (<= 5)")
    parser.add_argument("--reset", action="store_true", help="back to the lb's environment")
    args = parser.parse_args(argv)
    try:
        body = parse_assignments(args.assignments)
    except ValueError as exc:
        parser.error(str(exc))
    token = read_token(args.var, environ)
    rules = f"{args.admin.rstrip('/')}/admission/rules"
    try:
        if args.reset:
            status, answer = call(rules, "DELETE", token)
        elif args.preview:
            status, answer = call(
                f"{rules}/preview", "POST", token, {**body, "minutes": args.minutes}
            )
        elif body:
            status, answer = call(rules, "PUT", token, body)
        else:
            status, answer = call(rules, "GET", token)
    except OSError as exc:
        print(
            f"ops tune: cannot reach the lb admin listener at {args.admin}: {exc}", file=sys.stderr
        )
        return 1
    if status != 200:
        hint = " (is the token in VAR/admin_token or LB_ADMIN_TOKEN?)" if status == 401 else ""
        print(f"ops tune: {status}: {answer.get('detail', answer)}{hint}", file=sys.stderr)
        return 1
    if args.preview:
        print(
            f"in the last {answer['minutes']:g} min: {answer['requests_rejected']} of "
            f"{answer['requests']} requests ({answer['share_rejected']:.1%}) and "
            f"{answer['clients_rejected']} of {answer['clients']} clients would have been rejected"
        )
        for client, count in answer.get("top_rejected", []):
            print(f"  {client}: {count}")
    else:
        print(describe(answer))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
