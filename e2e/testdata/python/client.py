"""The python websockets client of e2e/tls_outside_test.go.

client.py URL CHANNEL [CAFILE] connects to URL, subscribes to CHANNEL with
the JSON protocol and waits for one message on it. The certificate and the
host name are verified by ssl.create_default_context, against CAFILE when
given (else the system's CAs). It prints JSON lines: {"event":"subscribed",
...}, then {"event":"message",...} and exits 0; or {"event":"error",...}
and exits 1.
"""
import asyncio
import json
import ssl
import sys

import websockets


def out(**kw):
    print(json.dumps(kw), flush=True)


async def run(url, channel, cafile):
    ctx = ssl.create_default_context(cafile=cafile)
    async with websockets.connect(url, ssl=ctx, open_timeout=10) as ws:
        welcome = json.loads(await ws.recv())
        if welcome.get("op") != "welcome":
            raise RuntimeError(f"first message {welcome}")
        await ws.send(json.dumps({"id": 1, "op": "subscribe", "channel": channel}))
        ack = json.loads(await ws.recv())
        if ack.get("op") != "ack" or ack.get("id") != 1:
            raise RuntimeError(f"subscribe answered {ack}")
        tls = ws.transport.get_extra_info("ssl_object")
        out(event="subscribed", conn=welcome["conn"], protocol=tls.version(),
            cipher=tls.cipher()[0],
            verified=ctx.verify_mode == ssl.CERT_REQUIRED and bool(tls.getpeercert()))
        while True:
            m = json.loads(await ws.recv())
            if m.get("op") == "message" and m.get("channel") == channel:
                out(event="message", channel=m["channel"], **{"from": m["from"]}, data=m.get("data"))
                return


def main():
    url, channel = sys.argv[1], sys.argv[2]
    cafile = sys.argv[3] if len(sys.argv) > 3 else None
    try:
        asyncio.run(asyncio.wait_for(run(url, channel, cafile), 15))
    except Exception as e:  # reported to the test, which fails on it
        out(event="error", error=f"{type(e).__name__}: {e}")
        sys.exit(1)


if __name__ == "__main__":
    main()
