// The npm ws client of e2e/tls_outside_test.go: node client.mjs URL CHANNEL
// connects to URL, subscribes to CHANNEL with the JSON protocol and waits
// for one message on it. The certificate is verified as ws does by default
// (Node's CA store plus NODE_EXTRA_CA_CERTS, and the host name). It prints
// JSON lines: {"event":"subscribed",...}, then {"event":"message",...} and
// exits 0; or {"event":"error",...} and exits 1.
import WebSocket from "ws";

const [url, channel] = process.argv.slice(2);
const out = (o) => process.stdout.write(JSON.stringify(o) + "\n");
const fail = (e) => {
	out({event: "error", error: String((e && e.message) || e)});
	process.exit(1);
};
setTimeout(() => fail("no message within 15 s"), 15000);

const ws = new WebSocket(url);
let sock = null;
let conn = "";
let state = "welcome";
ws.on("upgrade", (res) => { sock = res.socket; });
ws.on("error", fail);
ws.on("close", (code, reason) => fail(`closed with ${code} ${reason}`));
ws.on("message", (data, isBinary) => {
	if (isBinary) return fail("got a binary message");
	const m = JSON.parse(data.toString());
	switch (state) {
	case "welcome":
		if (m.op !== "welcome") return fail("first message " + data);
		conn = m.conn;
		ws.send(JSON.stringify({id: 1, op: "subscribe", channel}));
		state = "ack";
		break;
	case "ack":
		if (m.op !== "ack" || m.id !== 1) return fail("subscribe answered " + data);
		out({event: "subscribed", conn, protocol: sock.getProtocol(), cipher: sock.getCipher().name,
			verified: sock.authorized === true});
		state = "message";
		break;
	default:
		if (m.op !== "message" || m.channel !== channel) return;
		out({event: "message", channel: m.channel, from: m.from, data: m.data});
		ws.removeAllListeners("close");
		ws.on("close", () => process.exit(0));
		ws.close(1000);
	}
});
