using System.Collections.Concurrent;
using System.Net;
using System.Net.Http.Headers;
using System.Security.Claims;
using System.Text;
using System.Text.Json;
using DurableSessions.AspNetCore.Auth;
using Microsoft.IdentityModel.JsonWebTokens;
using Microsoft.IdentityModel.Tokens;

namespace DurableSessions.FunctionalTests;

/// <summary>
/// Sends well over a thousand malformed requests (<see cref="HostileRequests"/>) across every endpoint of the real
/// server executable, with its demo agent on, and asserts that every one gets an answer below 500, within a time bound,
/// read to its end without the connection being cut; and that afterwards the server is alive, healthy, serves every
/// session, keeps what it acknowledged and restarts cleanly.
/// </summary>
[Collection(HeavyTests.Name)]
public sealed class FuzzTests
{
    private const string Key = "fuzz-signing-key-of-at-least-32-bytes!!";
    private static readonly TimeSpan RequestBound = TimeSpan.FromSeconds(20);

    [Fact]
    public async Task A_thousand_malformed_requests_with_access_control_off_get_no_5xx_no_hang_and_no_cut_response()
        => await FuzzAsync(seed: 9001, count: 1000, accessControl: false);

    [Fact]
    public async Task Malformed_requests_and_hostile_tokens_with_access_control_on_get_no_5xx_no_hang_and_no_cut_response()
        => await FuzzAsync(seed: 9002, count: 600, accessControl: true);

    private static async Task FuzzAsync(int seed, int count, bool accessControl)
    {
        string[] args =
        [
            "--Agent:Enabled=true", "--Agent:TokensPerSecond=2000",
            "--DurableStreams:LongPollTimeout=00:00:01", "--DurableStreams:SseConnectionLifetime=00:00:01",

            // The expiry sweep runs many times during the run, so a stored value that breaks it shows up here.
            "--Storage:Sqlite:ExpirySweepInterval=00:00:00.200",
            .. accessControl ? new[] { "--Auth:SigningKey=" + Key } : [],
        ];
        await using var server = await ServerProcess.StartAsync(null, args);
        var admin = accessControl ? Issue("admin:fuzz", new() { ["**"] = [Capability.Read, Capability.Write, Capability.Control, Capability.Admin] }) : null;
        var tokens = accessControl ? HostileTokens(admin!) : [];

        using var client = new HttpClient(new SocketsHttpHandler
        {
            MaxConnectionsPerServer = 16,
            AllowAutoRedirect = false,

            // Header values go out as raw UTF-8, non-ASCII bytes included, as a hostile client would send them.
            RequestHeaderEncodingSelector = (_, _) => Encoding.UTF8,
        })
        {
            BaseAddress = server.BaseAddress,
            Timeout = Timeout.InfiniteTimeSpan,
        };
        await SeedAsync(client, admin);

        var generator = new HostileRequests(seed, tokens);
        var requests = Enumerable.Range(0, count).Select(_ => generator.Next()).ToList();
        var failures = new ConcurrentQueue<string>();
        var answered = 0;
        await Parallel.ForEachAsync(requests, new ParallelOptions { MaxDegreeOfParallelism = 8 }, async (request, _) =>
        {
            if (await SendAsync(client, request) is { } failure)
            {
                failures.Enqueue($"{failure}\n    {request}");
            }
            else
            {
                Interlocked.Increment(ref answered);
            }
        });

        Assert.True(failures.IsEmpty, $"{failures.Count} of {count} malformed requests (seed {seed}) were not answered as they must be:\n"
            + string.Join("\n", failures.Take(40)) + "\nThe server's last lines:\n" + server.RecentOutput);
        Assert.Equal(count, answered);
        Assert.False(server.HasExited, "The server process exited during the run.");
        await AssertServesAsync(client, admin);

        // What a request may have stored must not break a restart (the expiry sweep, the agent's catch-up, sessions).
        await server.RestartAsync();
        await AssertServesAsync(client, admin);
        foreach (var request in requests.Take(100))
        {
            Assert.Null(await SendAsync(client, request));
        }

        Assert.False(server.HasExited, "The server process exited after the restart.");
        await AssertServesAsync(client, admin);
    }

    /// <summary>Creates the streams and sessions the generator addresses, so requests reach past "not found".</summary>
    private static async Task SeedAsync(HttpClient client, string? admin)
    {
        foreach (var (path, type) in new[] { ("fuzz/json", "application/json"), ("fuzz/bytes", "text/plain") })
        {
            using var create = Request(HttpMethod.Put, "/v1/stream/" + path, admin, type == "application/json" ? "[{\"seed\":1}]" : "seed", type);
            Assert.Equal(HttpStatusCode.Created, (await client.SendAsync(create)).StatusCode);
        }

        // A registered agent, so claims, acks and releases reach past the registry; the message below is its turn.
        using var agent = Request(HttpMethod.Put, "/v1/agents/agent:fz", admin, "{}");
        Assert.Equal(HttpStatusCode.Created, (await client.SendAsync(agent)).StatusCode);

        foreach (var id in HostileRequests.SessionIds)
        {
            using var create = Request(HttpMethod.Put, $"/v1/sessions/{id}", admin, "{}");
            Assert.Equal(HttpStatusCode.Created, (await client.SendAsync(create)).StatusCode);
        }

        using var message = Request(HttpMethod.Post, "/v1/sessions/fz1/messages", admin, "{\"text\":\"Start a run\"}");
        Assert.Equal(HttpStatusCode.Created, (await client.SendAsync(message)).StatusCode);
    }

    /// <summary>Sends one request and reads its answer to the end; returns what was wrong with it, or null.</summary>
    private static async Task<string?> SendAsync(HttpClient client, HostileRequest hostile)
    {
        using var request = new HttpRequestMessage(new HttpMethod(hostile.Method), hostile.Target);
        if (hostile.Body is not null)
        {
            request.Content = new ByteArrayContent(hostile.Body);
            if (hostile.ContentType is { Length: > 0 } type)
            {
                request.Content.Headers.TryAddWithoutValidation("Content-Type", type);
            }
        }

        foreach (var (name, value) in hostile.Headers)
        {
            if (!request.Headers.TryAddWithoutValidation(name, value))
            {
                request.Content ??= new ByteArrayContent([]);
                request.Content.Headers.TryAddWithoutValidation(name, value);
            }
        }

        if (hostile.Token is not null)
        {
            request.Headers.TryAddWithoutValidation("Authorization", "Bearer " + hostile.Token);
        }

        using var timeout = new CancellationTokenSource(RequestBound);
        try
        {
            using var response = await client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, timeout.Token);
            var body = await response.Content.ReadAsByteArrayAsync(timeout.Token);
            var status = (int)response.StatusCode;
            if (status >= 500)
            {
                return $"answered {status}: {Clip(Encoding.UTF8.GetString(body))}";
            }

            if (status >= 400 && hostile.Method != "HEAD" && ReachesOurCode(hostile) && !IsProblem(body))
            {
                return $"answered {status} without a JSON error body: {Clip(Encoding.UTF8.GetString(body))}";
            }

            return null;
        }
        catch (OperationCanceledException) when (timeout.IsCancellationRequested)
        {
            return $"no complete answer within {RequestBound.TotalSeconds} s (hang)";
        }
        catch (HttpRequestException ex)
        {
            return $"connection failed or response cut: {ex.Message} {ex.InnerException?.Message}";
        }
        catch (IOException ex)
        {
            return $"response cut: {ex.Message}";
        }
    }

    /// <summary>
    /// Whether the request reaches the server's own endpoints, which answer every error with a JSON body. Kestrel itself
    /// refuses non-ASCII header bytes and encoded NULs in the path (400), and folds dot segments before routing.
    /// </summary>
    private static bool ReachesOurCode(HostileRequest request)
    {
        var target = request.Target;
        var path = target.Split('?', 2)[0];
        if (target.Contains("%00", StringComparison.Ordinal) || target.Contains("%2e", StringComparison.OrdinalIgnoreCase)
            || path.Contains("/../", StringComparison.Ordinal) || path.Contains("/./", StringComparison.Ordinal) || path.EndsWith("/..", StringComparison.Ordinal) || path.EndsWith("/.", StringComparison.Ordinal)
            || request.Headers.Any(h => !System.Text.Ascii.IsValid(h.Value)))
        {
            return false;
        }

        // Everything under /v1/ is ours: a path no endpoint takes gets the JSON 404 too.
        return target.StartsWith("/v1/", StringComparison.Ordinal) || target.StartsWith("/api/chat/", StringComparison.Ordinal) || target == "/api/chat";
    }

    private static bool IsProblem(byte[] body)
    {
        try
        {
            using var json = JsonDocument.Parse(body);
            return json.RootElement.TryGetProperty("error", out var error) && error.TryGetProperty("code", out var code)
                && code.ValueKind == JsonValueKind.String && error.TryGetProperty("message", out var message) && message.ValueKind == JsonValueKind.String;
        }
        catch (JsonException)
        {
            return false;
        }
    }

    /// <summary>The server is healthy, keeps what it acknowledged, takes new writes and serves every session.</summary>
    private static async Task AssertServesAsync(HttpClient client, string? admin)
    {
        using var bound = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        Assert.Equal(HttpStatusCode.OK, (await client.GetAsync("/health", bound.Token)).StatusCode);

        // New writes are taken, on a stream made now: the fuzz may have closed the seeded ones, as any client may.
        var after = "/v1/stream/fuzz/after-" + Guid.NewGuid().ToString("N");
        using (var create = Request(HttpMethod.Put, after, admin, "[]"))
        {
            Assert.Equal(HttpStatusCode.Created, (await client.SendAsync(create, bound.Token)).StatusCode);
        }

        using (var append = Request(HttpMethod.Post, after, admin, "{\"after\":\"fuzz\"}"))
        {
            Assert.Equal(HttpStatusCode.NoContent, (await client.SendAsync(append, bound.Token)).StatusCode);
        }

        using (var read = Request(HttpMethod.Get, after + "?offset=-1", admin))
        {
            using var response = await client.SendAsync(read, bound.Token);
            Assert.Equal("[{\"after\":\"fuzz\"}]", await response.Content.ReadAsStringAsync(bound.Token));
        }

        // What was acknowledged before the fuzz is kept.
        using (var read = Request(HttpMethod.Get, "/v1/stream/fuzz/json?offset=-1", admin))
        {
            using var response = await client.SendAsync(read, bound.Token);
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            var messages = JsonDocument.Parse(await response.Content.ReadAsStringAsync(bound.Token)).RootElement;
            Assert.Equal(1, messages[0].GetProperty("seed").GetInt32());
        }

        foreach (var id in HostileRequests.SessionIds)
        {
            using var snapshot = Request(HttpMethod.Get, $"/v1/sessions/{id}", admin);
            var status = (await client.SendAsync(snapshot, bound.Token)).StatusCode;
            Assert.True(status is HttpStatusCode.OK or HttpStatusCode.NotFound, $"GET /v1/sessions/{id} answered {(int)status}");
            using var message = Request(HttpMethod.Post, $"/v1/sessions/{id}/messages", admin, "{\"text\":\"still there?\"}");
            var posted = (int)(await client.SendAsync(message, bound.Token)).StatusCode;
            Assert.True(posted < 500, $"POST /v1/sessions/{id}/messages answered {posted}");
        }
    }

    private static HttpRequestMessage Request(HttpMethod method, string url, string? token, string? body = null, string contentType = "application/json")
    {
        var request = new HttpRequestMessage(method, url);
        if (token is not null)
        {
            request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", token);
        }

        if (body is not null)
        {
            request.Content = new StringContent(body, Encoding.UTF8);
            request.Content.Headers.ContentType = new MediaTypeHeaderValue(contentType);
        }

        return request;
    }

    private static string Issue(string subject, Dictionary<string, Capability[]> grants)
        => new AccessTokens(new AccessOptions { SigningKey = Key }).Issue(subject, grants, TimeSpan.FromHours(1));

    /// <summary>Valid tokens of several reaches, and tokens that are broken, forged or carry malformed grants.</summary>
    private static List<string?> HostileTokens(string admin) =>
    [
        admin, admin, admin,
        Issue("user:writer", new() { ["fuzz/**"] = [Capability.Read, Capability.Write], ["sessions/fz1"] = [Capability.Read, Capability.Write] }),
        Issue("user:reader", new() { ["**"] = [Capability.Read] }),
        Issue("agent:other", new() { ["sessions/**"] = [Capability.Read, Capability.Write] }),
        null, "", "x.y.z", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.",
        Forged(new Dictionary<string, object> { ["**"] = new object[] { 3 } }),
        Forged(new Dictionary<string, object> { ["**"] = new[] { "write,control", " admin ", "3", "ADMIN" } }),
        Forged(new Dictionary<string, object> { ["**"] = "admin" }),
        Forged(new Dictionary<string, object> { ["**"] = new object[] { new Dictionary<string, object> { ["admin"] = true }, true } }),
        Forged(new object[] { "**", "admin" }),
        Forged(null),
    ];

    private static string Forged(object? grants)
    {
        var claims = new Dictionary<string, object>();
        if (grants is not null)
        {
            claims["grants"] = JsonDocument.Parse(JsonSerializer.Serialize(grants)).RootElement.Clone();
        }

        var now = DateTime.UtcNow;
        return new JsonWebTokenHandler().CreateToken(new SecurityTokenDescriptor
        {
            Subject = new ClaimsIdentity([new Claim("sub", "user:forger")]),
            Claims = claims,
            NotBefore = now,
            IssuedAt = now,
            Expires = now.AddHours(1),
            SigningCredentials = new SigningCredentials(new SymmetricSecurityKey(Encoding.UTF8.GetBytes(Key)), SecurityAlgorithms.HmacSha256),
        });
    }

    private static string Clip(string value) => value.Length > 300 ? value[..300] + "…" : value;
}
