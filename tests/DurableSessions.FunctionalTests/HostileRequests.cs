using System.Text;

namespace DurableSessions.FunctionalTests;

/// <summary>One request of the fuzz run: everything needed to send it again and to report it.</summary>
public sealed record HostileRequest(string Method, string Target, byte[]? Body, string? ContentType, (string Name, string Value)[] Headers, string? Token)
{
    public override string ToString()
    {
        var body = Body is null ? "" : " body=" + Describe(Body);
        var headers = Headers.Length == 0 ? "" : " headers=[" + string.Join("; ", Headers.Select(h => $"{h.Name}: {Clip(h.Value)}")) + "]";
        var token = Token is null ? "" : " token=" + Clip(Token);
        return $"{Method} {Clip(Target, 200)} ct={ContentType ?? "-"}{headers}{token}{body}";
    }

    private static string Describe(byte[] body)
        => body.Length > 300 ? $"{body.Length} bytes: {Clip(Encoding.UTF8.GetString(body, 0, 200))}…" : Clip(Encoding.UTF8.GetString(body), 300);

    private static string Clip(string value, int max = 80) => value.Length > max ? value[..max] + "…" : value;
}

/// <summary>
/// Makes malformed requests for every endpoint of the server: stream create/append/read/delete with bad headers and
/// bodies, hostile session events, the sessions API, the AI SDK chat endpoints and the subscription APIs. Each request
/// starts from a valid shape and breaks some of it: wrong JSON types, overflowing numbers, invalid UTF-8, lone
/// surrogates, deep nesting, odd paths and offsets, conflicting headers. Deterministic for a given seed.
/// </summary>
public sealed class HostileRequests(int seed, IReadOnlyList<string?> tokens)
{
    private static readonly string[] Numbers =
    [
        "0", "-0", "01", "-1", "1.5", "1e3", "+1", " 1", "9007199254740991", "9007199254740992", "300000000000",
        "3155760001", "9223372036854775807", "9223372036854775808", "18446744073709551616", "-9223372036854775808",
        "NaN", "Infinity", "0x10", "", "1 2", "١٢",
    ];

    private static readonly string[] Offsets =
    [
        "-1", "now", "0000000000000000_0000000000000000", "0000000000000000_0000000000000001",
        "9999999999999999_9999999999999999", "0922337203685477_5807000000000000", "0000000000000000_000000000000000x",
        "0000000000000000-0000000000000000", "-2", "", "NOW", "0", "00000000000000000000000000000000_",
        new string('9', 33), "0000000000000000_0000000000000000&offset=now",
    ];

    private static readonly string[] Segments =
    [
        "a", "fuzz", "sessions", "__ds", "subscriptions", "%2e%2e", "..", ".", "a%2Fb", "%00", "%ff", "%", "%zz", "%20",
        "é", "%C3%A9", "a b", "x:y", "*", "**", "~", new string('s', 300), "_", "-", "jwks.json", "ack", "claim",
        "callback", "release", "streams", "messages", "runs", "cancel", "steer", "handoff", "presence", "stream", "stop",
    ];

    private static readonly string[] SessionTypes = ["session", "message", "delta", "run", "control", "presence", "handoff", "mystery", ""];

    private static readonly string[] Statuses = ["started", "finished", "failed", "cancelled", "interrupted", "paused", "complete", "streaming", "requested", "acknowledged", "bogus"];

    private readonly Random _random = new(seed);

    /// <summary>Session ids the generator addresses; the test creates some of them first so requests reach deep.</summary>
    public static readonly string[] SessionIds = ["fz1", "fz2", "fz3"];

    /// <summary>Stream paths the test creates first (JSON, bytes, a session).</summary>
    public static readonly string[] StreamPaths = ["fuzz/json", "fuzz/bytes", "sessions/fz1"];

    public HostileRequest Next() => _random.Next(12) switch
    {
        0 => CreateStream(),
        1 or 2 => Append(),
        3 => Read(),
        4 => HeadOrDelete(),
        5 or 6 => SessionEvent(),
        7 => SessionsApi(),
        8 => Chat(),
        9 => Subscription(),
        10 => OddTarget(),
        _ => Chance(0.5) ? AgentTurns() : Append(),
    };

    private HostileRequest CreateStream()
    {
        var headers = new List<(string, string)>();
        if (Chance(0.5))
        {
            headers.Add(("Stream-TTL", Pick(Numbers)));
        }

        if (Chance(0.3))
        {
            headers.Add(("Stream-Expires-At", Pick(["2030-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00", "tomorrow", "2030-13-01T00:00:00Z", "1e9"])));
        }

        if (Chance(0.3))
        {
            headers.Add(("Stream-Forked-From", Pick(["fuzz/json", "/v1/stream/fuzz/json", "sessions/fz1", "/v1/stream/sessions/fz2", "nothing", "../x", "", "__ds/subscriptions"])));
        }

        if (Chance(0.2))
        {
            headers.Add(("Stream-Fork-Offset", Pick(Offsets)));
        }

        if (Chance(0.2))
        {
            headers.Add(("Stream-Fork-Sub-Offset", Pick(Numbers)));
        }

        if (Chance(0.2))
        {
            headers.Add(("Stream-Closed", Pick(["true", "TRUE", "false", "yes", ""])));
        }

        var path = Chance(0.3) ? "sessions/" + Pick(["fz2", "fz3", "new" + _random.Next(50)]) : Path();
        return new HostileRequest("PUT", "/v1/stream/" + path, Chance(0.5) ? JsonBody() : null, Pick(["application/json", "text/plain", "application/octet-stream", "application/json; charset=latin1", "nonsense", "", "*/*"]), [.. headers], Token());
    }

    private HostileRequest Append()
    {
        var headers = new List<(string, string)>();
        if (Chance(0.4))
        {
            headers.Add(("Producer-Id", Pick(["p", "", new string('p', 300), "p q", "é"])));
            headers.Add(("Producer-Epoch", Pick(Numbers)));
            if (Chance(0.8))
            {
                headers.Add(("Producer-Seq", Pick(Numbers)));
            }
        }

        if (Chance(0.2))
        {
            headers.Add(("Stream-Seq", Pick(["1", "", "a", new string('z', 300), "0"])));
        }

        if (Chance(0.1))
        {
            headers.Add(("Stream-Closed", "true"));
        }

        var path = Pick([.. StreamPaths, "fuzz/missing", "sessions/fz2", Path()]);
        return new HostileRequest("POST", "/v1/stream/" + path, Chance(0.9) ? JsonBody() : null, Pick(["application/json", "application/json", "text/plain", "application/octet-stream", "", "garbage/"]), [.. headers], Token());
    }

    private HostileRequest Read()
    {
        var query = new List<string>();
        if (Chance(0.9))
        {
            query.Add("offset=" + Uri.EscapeDataString(Pick(Offsets)));
        }

        if (Chance(0.5))
        {
            query.Add("live=" + Pick(["sse", "long-poll", "websocket", "", "SSE", "true"]));
        }

        if (Chance(0.2))
        {
            query.Add("cursor=" + Uri.EscapeDataString(Pick(Numbers)));
        }

        if (Chance(0.1))
        {
            query.Add(Pick(["offset=-1", "live=sse", "x=%ff", "offset", "skip-progress-of=", "skip-progress-of=agent%2F", "skip-progress-of=" + new string('p', 300)]));
        }

        var headers = Chance(0.2) ? new[] { ("If-None-Match", Pick(["\"x\"", "*", "", "W/\"1\""])) } : [];
        var path = Pick([.. StreamPaths, "fuzz/missing", Path()]);
        return new HostileRequest("GET", "/v1/stream/" + path + (query.Count > 0 ? "?" + string.Join('&', query) : ""), null, null, headers, Token());
    }

    private HostileRequest HeadOrDelete()
        => new(Pick(["HEAD", "DELETE", "PATCH", "OPTIONS", "TRACE"]), "/v1/stream/" + Pick(["fuzz/missing", "fuzz/other" + _random.Next(5), Path()]), null, null, [], Token());

    /// <summary>A raw append of State Protocol events to a session stream, with any part of them wrong.</summary>
    private HostileRequest SessionEvent()
    {
        var count = _random.Next(1, 4);
        var events = new List<string>();
        for (var i = 0; i < count; i++)
        {
            var type = Pick(SessionTypes);
            var fields = new List<string>();
            foreach (var (name, valid) in new[]
            {
                ("id", Str("r1")), ("status", Str(Pick(Statuses))), ("role", Str(Pick(["user", "assistant", "system", "tool"]))),
                ("author", Str(Pick(["user:alice", "agent:demo", "human:mallory"]))), ("agent", Str("agent:demo")),
                ("runId", Str("r1")), ("messageId", Str("m1")), ("text", Str("hi")), ("part", "0"),
                ("parts", "[{\"type\":\"text\",\"text\":\"hi\"}]"), ("holder", Str("human:mallory")), ("kind", Str("human")),
                ("newMessagePolicy", Str("reject")), ("handoffPolicy", Str("pause")), ("notifyUrl", Str("http://127.0.0.1:1/")),
                ("by", Str("user:alice")), ("action", Str(Pick(["cancel", "steer", "x"]))),
            })
            {
                if (Chance(0.35))
                {
                    fields.Add($"{Str(name)}:{(Chance(0.6) ? JunkJson(2) : valid)}");
                }
            }

            var key = Chance(0.7) ? Str(Pick(["r1", "m1", "m1:0", "session", "lease", "p1", "\\ud800", "é"])) : JunkJson(1);
            var value = Chance(0.85) ? "{" + string.Join(',', fields) + "}" : JunkJson(2);
            var operation = Chance(0.8) ? Str(Pick(["insert", "update", "delete", "upsert"])) : JunkJson(1);
            var headers = Chance(0.9) ? $"{{\"operation\":{operation}}}" : Pick(["{\"control\":\"reset\"}", "null", "[]", "{\"control\":5}"]);
            events.Add(Chance(0.9) ? $"{{\"type\":{(Chance(0.9) ? Str(type) : JunkJson(1))},\"key\":{key},\"value\":{value},\"headers\":{headers}}}" : JunkJson(3));
        }

        var body = Encoding.UTF8.GetBytes(count == 1 && Chance(0.5) ? events[0] : "[" + string.Join(',', events) + "]");
        return new HostileRequest(Chance(0.85) ? "POST" : "PUT", "/v1/stream/sessions/" + Pick([.. SessionIds, "new" + _random.Next(20)]), Corrupt(body), "application/json", [], Token());
    }

    private HostileRequest SessionsApi()
    {
        var id = Chance(0.85) ? Pick(SessionIds) : Pick(["", "%2e%2e", new string('x', 200), "a b", "é", "a/b", "_"]);
        (string Method, string Suffix, string? Body) request = _random.Next(9) switch
        {
            0 => ("PUT", "", Template(("title", Str("t")), ("newMessagePolicy", Str(Pick(["queue", "interrupt", "reject"]))), ("handoffPolicy", Str("pause")), ("notifyUrl", Str("https://example.com/")))),
            1 => ("GET", "", null),
            2 or 3 => ("POST", "/messages", Template(("text", Str("hello")), ("role", Str(Pick(["user", "assistant", "system"]))), ("author", Str("user:alice")), ("parts", "[{\"type\":\"text\",\"text\":\"x\"}]"))),
            4 => ("POST", "/runs/" + Pick(["r1", "run_x", "%00", ""]) + "/" + Pick(["cancel", "steer", "pause"]), Template(("by", Str("u")), ("text", Str("go")))),
            5 => (Pick(["POST", "DELETE", "PUT"]), "/handoff", Template(("by", Str("u")))),
            6 => ("POST", "/presence", Template(("participantId", Str("user:alice")), ("kind", Str("human")), ("status", Str("active")))),
            7 => ("DELETE", "/presence/" + Pick(["user:alice", "agent:demo", "%ff", ""]), null),
            _ => (Pick(["GET", "POST", "PATCH"]), "/" + Pick(Segments) + (Chance(0.5) ? "/" + Pick(Segments) : ""), JsonText()),
        };
        var (method, rest, body) = request;
        return new HostileRequest(method, "/v1/sessions/" + id + rest, body is null ? null : Corrupt(Encoding.UTF8.GetBytes(body)), "application/json", [], Token());
    }

    private HostileRequest Chat()
    {
        var id = Chance(0.8) ? Pick(SessionIds) : Pick(["", "a b", "%ff", new string('c', 200)]);
        switch (_random.Next(4))
        {
            case 0:
                return new HostileRequest("GET", $"/api/chat/{id}/stream", null, null, [], Token());
            case 1:
                return new HostileRequest("POST", $"/api/chat/{id}/stop", Chance(0.5) ? JsonBody() : null, "application/json", [], Token());
            default:
                var part = Template(("type", Str(Pick(["text", "file", "reasoning"]))), ("text", Str("hi there")));
                var message = Template(("id", Str("u1")), ("role", Str(Pick(["user", "assistant"]))), ("parts", "[" + part + "]"));
                var body = Template(("id", Str(id)), (Pick(["messages", "message"]), Chance(0.5) ? "[" + message + "]" : message), ("trigger", Str("submit-message")));
                return new HostileRequest("POST", "/api/chat" + (Chance(0.1) ? "/" + Pick(Segments) : ""), Corrupt(Encoding.UTF8.GetBytes(body)), "application/json", [], Token());
        }
    }

    private HostileRequest Subscription()
    {
        var id = Chance(0.8) ? Pick(["sub1", "sub2", "pw1"]) : Pick(["", "%ff", "a b", new string('i', 300)]);
        (string Method, string Suffix, string? Body) request = _random.Next(8) switch
        {
            0 or 1 => ("PUT", "", Template(
                ("type", Str(Pick(["webhook", "pull-wake", "carrier-pigeon"]))),
                ("pattern", Str(Pick(["fuzz/*", "**/**/**/**/**/z", "sessions/**", "**", "*", "", new string('*', 500), string.Concat(Enumerable.Repeat("**/", 100)) + "z"]))),
                ("streams", "[" + Str(Pick(["fuzz/json", "sessions/fz1", "../x"])) + "]"),
                ("webhook", Template(("url", Str(Pick(["http://127.0.0.1:1/hook", "http://localhost./", "http://[::ffff:127.0.0.1]/", "https://example.com/", "ftp://x", "http://169.254.169.254/"]))))),
                ("wake_stream", Str(Pick(["fuzz/wake", "fuzz/json", "sessions/fz1", "", "__ds/x", "../x"]))),
                ("trim_wake_stream", Pick(["true", "false", "null", "\"yes\"", "1"])),
                ("lease_ttl_ms", Pick(Numbers)))),
            2 => (Pick(["GET", "DELETE"]), "", null),
            3 => ("POST", "/claim", Template(("worker", Str("w1")))),
            4 => ("POST", "/" + Pick(["ack", "release", "callback", "claim/ack"]), Template(("token", Str("x.y.z")), ("generation", Pick(Numbers)), ("done", Pick(["true", "1", "\"yes\""])), ("acks", "[{\"path\":\"fuzz/json\",\"offset\":\"-1\"}]"))),
            5 => ("POST", "/streams", Template(("streams", "[" + Str(Pick(["fuzz/json", "", "__ds/x"])) + "]"))),
            6 => ("DELETE", "/streams/" + Pick(["fuzz%2Fjson", "%ff", "..", "x"]) + (Chance(0.5) ? "/ack" : ""), null),
            _ => (Pick(["GET", "POST", "PUT"]), "/" + Pick(Segments) + "/" + Pick(Segments), JsonText()),
        };
        var (method, rest, body) = request;
        var headers = Chance(0.3) ? new[] { ("Authorization", "Bearer " + Pick(["x.y.z", "", "eyJhbGciOiJub25lIn0.e30."])) } : [];
        return new HostileRequest(method, "/v1/stream/__ds/subscriptions/" + id + rest, body is null ? null : Corrupt(Encoding.UTF8.GetBytes(body)), "application/json", headers, headers.Length > 0 ? null : Token());
    }

    private HostileRequest AgentTurns()
    {
        var agent = Chance(0.8) ? Pick(["agent:fz", "agent:demo"]) : Pick(["", "%ff", "a b", new string('a', 300), "x/y"]);
        (string Method, string Suffix, string? Body) request = _random.Next(6) switch
        {
            0 => ("PUT", "", Template(("lease_ttl_ms", Pick(Numbers)), ("description", Str(Pick(["d", new string('d', 2000)]))))),
            1 or 2 => ("POST", "/claim", Template(("worker", Str(Pick(["w1", "", new string('w', 300)]))), ("wait_ms", Pick(["0", "0", "-1", "1e3", "300001"])), ("stream", Str(Pick(["sessions/fz1", "sessions/never", "fuzz/json", "sessions/", "sessions/a/b"]))))),
            3 or 4 => ("POST", "/" + Pick(["ack", "release"]), Template(("stream", Str(Pick(["sessions/fz1", "sessions/never"]))), ("token", Str("ct_x")), ("wake_id", Str("w_x")), ("generation", Pick(Numbers)), ("done", Pick(["true", "1", "\"yes\""])), ("acks", Pick(["[{\"stream\":\"sessions/fz1\",\"offset\":\"-1\"}]", "[]", "{}", "[1,2]"])))),
            _ => (Pick(["GET", "POST", "DELETE"]), "/" + Pick(Segments), JsonText()),
        };
        var (method, rest, body) = request;
        return new HostileRequest(method, "/v1/agents/" + agent + rest, body is null ? null : Corrupt(Encoding.UTF8.GetBytes(body)), "application/json", [], Token());
    }

    private HostileRequest OddTarget()
        => new(Pick(["GET", "POST", "PUT", "DELETE"]), Pick(["/v1/stream", "/v1/stream/", "/v1/stream/__ds", "/v1/stream/__ds/jwks.json", "/v1/sessions", "/v1/sessions/", "/api/chat/", "/health", "/v1/stream/%ff%fe", "/v1/stream/" + string.Concat(Enumerable.Repeat("a/", 400)) + "z", "/v1/stream/a?offset=%ff", "/index.html", "/lib/durable-sessions.js"]), Chance(0.3) ? JsonBody() : null, "application/json", [], Token());

    private string Path() => string.Join('/', Enumerable.Range(0, _random.Next(1, 4)).Select(_ => Chance(0.6) ? "fuzz" + _random.Next(4) : Pick(Segments)));

    /// <summary>A JSON body, valid or broken.</summary>
    private byte[] JsonBody() => Corrupt(Encoding.UTF8.GetBytes(JsonText()));

    private string JsonText() => Chance(0.5) ? JunkJson(3) : "[" + JunkJson(2) + "," + JunkJson(2) + "]";

    /// <summary>Sometimes breaks the bytes: invalid UTF-8, truncation, a NUL, a stray byte.</summary>
    private byte[] Corrupt(byte[] body)
    {
        if (body.Length == 0 || !Chance(0.3))
        {
            return body;
        }

        var bytes = body.ToList();
        switch (_random.Next(5))
        {
            case 0:
                bytes.InsertRange(Math.Max(0, bytes.LastIndexOf((byte)'"')), [0xff, 0xfe]);
                break;
            case 1:
                bytes.InsertRange(Math.Max(0, bytes.LastIndexOf((byte)'"')), [0xc0, 0x80]);
                break;
            case 2:
                bytes.RemoveRange(bytes.Count / 2, bytes.Count - (bytes.Count / 2));
                break;
            case 3:
                bytes.Insert(_random.Next(bytes.Count), 0);
                break;
            default:
                bytes.InsertRange(Math.Max(0, bytes.LastIndexOf((byte)'"')), [0xed, 0xa0, 0x80]);
                break;
        }

        return [.. bytes];
    }

    /// <summary>Any JSON value, often of the wrong type for where it is put.</summary>
    private string JunkJson(int depth) => _random.Next(depth > 0 ? 16 : 12) switch
    {
        0 => "null",
        1 => Pick(["true", "false"]),
        2 => Pick(Numbers.Where(n => double.TryParse(n, System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out _) && !n.StartsWith('+') && !n.StartsWith(' ') && !n.Contains(' ') && !(n.Length > 1 && n[0] == '0' && n[1] != '.') && !n.StartsWith("-0") && n != "NaN" && n != "Infinity").ToArray()),
        3 => Pick(["1e999", "-1e999", "1.7976931348623157e309", "0.0000000000000000000000001", "123456789012345678901234567890"]),
        4 => Str(Pick(["", "x", "user:alice", "started", "cancelled", "é", "\u2028"])),
        5 => "\"\\ud800\"",
        6 => "\"a\\udc00b\"",
        7 => Str(new string('x', _random.Next(1, 5) * 1000)),
        8 => "\"\\u0000\"",
        9 => Deep(_random.Next(28, 80)),
        10 => "[]",
        11 => "{}",
        12 => "[" + JunkJson(depth - 1) + "," + JunkJson(depth - 1) + "]",
        13 => "{\"type\":" + JunkJson(depth - 1) + ",\"value\":" + JunkJson(depth - 1) + "}",
        14 => Chance(0.3)
            ? "{\"id\":\"x\",\"id\":" + JunkJson(depth - 1) + ",\"type\":\"run\",\"type\":\"message\"}"
            : "{" + Str(Pick(["id", "text", "status", "__proto__", ""])) + ":" + JunkJson(depth - 1) + "}",
        _ => "{\"a\":" + JunkJson(depth - 1) + "}",
    };

    private string Deep(int levels) => Chance(0.5)
        ? string.Concat(Enumerable.Repeat("[", levels)) + string.Concat(Enumerable.Repeat("]", levels))
        : string.Concat(Enumerable.Repeat("{\"a\":", levels)) + "1" + string.Concat(Enumerable.Repeat("}", levels));

    /// <summary>A JSON object from a valid shape, with some fields left out and some replaced by junk.</summary>
    private string Template(params (string Name, string Json)[] fields)
        => "{" + string.Join(',', fields.Where(_ => !Chance(0.15)).SelectMany(f => Enumerable.Repeat(f, Chance(0.05) ? 2 : 1)).Select(f => $"{Str(f.Name)}:{(Chance(0.3) ? JunkJson(2) : f.Json)}")) + "}";

    private static string Str(string value) => System.Text.Json.JsonSerializer.Serialize(value);

    private string? Token() => tokens.Count == 0 ? null : tokens[_random.Next(tokens.Count)];

    private bool Chance(double p) => _random.NextDouble() < p;

    private T Pick<T>(IReadOnlyList<T> items) => items[_random.Next(items.Count)];
}
