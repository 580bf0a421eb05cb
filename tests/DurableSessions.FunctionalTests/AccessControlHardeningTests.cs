using System.Diagnostics;
using System.Net;
using System.Net.Http.Headers;
using System.Security.Claims;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using DurableSessions.AspNetCore.Auth;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.IdentityModel.JsonWebTokens;
using Microsoft.IdentityModel.Tokens;

namespace DurableSessions.FunctionalTests;

/// <summary>
/// Access control against an attacker (issue 9): subscription routes authorized by their exact shape, reads of other
/// streams through forks and subscriptions, private caching, strict capability names and a glob matcher that cannot be
/// made to spin.
/// </summary>
public sealed class AccessControlHardeningTests : IAsyncLifetime
{
    private const string Key = "test-signing-key-of-at-least-32-bytes!";
    private static readonly Capability[] All = [Capability.Read, Capability.Write, Capability.Control, Capability.Admin];
    private InProcessServer _server = null!;
    private AccessTokens _tokens = null!;
    private string _root = null!;

    public async ValueTask InitializeAsync()
    {
        _server = await InProcessServer.StartAsync(services: s => s.Configure<AccessOptions>(o => o.SigningKey = Key));
        _tokens = _server.Services.GetRequiredService<AccessTokens>();
        _root = Token("admin:root", ("**", All), ("__ds", All));
    }

    public async ValueTask DisposeAsync() => await _server.DisposeAsync();

    private string Token(string subject, params (string Pattern, Capability[] Capabilities)[] grants)
        => _tokens.Issue(subject, grants.ToDictionary(g => g.Pattern, g => g.Capabilities), TimeSpan.FromMinutes(5));

    private async Task<HttpResponseMessage> Send(HttpMethod method, string url, string? token, string? body = null, params (string Name, string Value)[] headers)
    {
        using var request = new HttpRequestMessage(method, url);
        if (token is not null)
        {
            request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", token);
        }

        foreach (var (name, value) in headers)
        {
            request.Headers.TryAddWithoutValidation(name, value);
        }

        if (body is not null)
        {
            request.Content = new StringContent(body, Encoding.UTF8, "application/json");
        }

        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(20));
        return await _server.Client.SendAsync(request, timeout.Token);
    }

    private async Task CreateJsonStream(string path, string? body = null)
        => Assert.Equal(HttpStatusCode.Created, (await Send(HttpMethod.Put, $"/v1/stream/{path}", _root, body ?? "[]")).StatusCode);

    private static async Task<JsonObject> Json(HttpResponseMessage response)
        => (JsonObject)JsonNode.Parse(await response.Content.ReadAsStringAsync())!;

    [Fact]
    public async Task An_ai_sdk_chat_message_needs_read_as_well_as_write_since_its_answer_is_the_reply()
    {
        Assert.Equal(HttpStatusCode.Created, (await Send(HttpMethod.Put, "/v1/sessions/team", _root, "{}")).StatusCode);
        Assert.Equal(HttpStatusCode.Created, (await Send(HttpMethod.Post, "/v1/sessions/team/messages", _root, "{\"text\":\"the plan?\"}")).StatusCode);
        var before = (await Send(HttpMethod.Get, "/v1/stream/sessions/team?offset=-1", _root)).Headers.GetValues("Stream-Next-Offset").Single();

        // Write alone: neither a new message nor a regenerate (which would stream the answer to someone else's question).
        var writeOnly = Token("user:w", ("sessions/team", [Capability.Write]));
        foreach (var body in new[] { "{\"id\":\"team\",\"messages\":[{\"id\":\"m1\",\"role\":\"user\",\"parts\":[{\"type\":\"text\",\"text\":\"summarise\"}]}]}", "{\"id\":\"team\",\"trigger\":\"regenerate-message\"}" })
        {
            var refused = await Send(HttpMethod.Post, "/api/chat", writeOnly, body);
            Assert.Equal(HttpStatusCode.Forbidden, refused.StatusCode);
        }

        Assert.Equal(before, (await Send(HttpMethod.Get, "/v1/stream/sessions/team?offset=-1", _root)).Headers.GetValues("Stream-Next-Offset").Single());

        // Read and write: the message is taken, and its reply streamed back.
        var both = Token("user:rw", ("sessions/team", [Capability.Read, Capability.Write]));
        using var request = new HttpRequestMessage(HttpMethod.Post, "/api/chat") { Content = new StringContent("{\"id\":\"team\",\"messages\":[{\"id\":\"m2\",\"role\":\"user\",\"parts\":[{\"type\":\"text\",\"text\":\"summarise\"}]}]}", Encoding.UTF8, "application/json") };
        request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", both);
        using var accepted = await _server.Client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, TestContext.Current.CancellationToken);
        Assert.Equal(HttpStatusCode.OK, accepted.StatusCode);
        Assert.NotEqual(before, (await Send(HttpMethod.Get, "/v1/stream/sessions/team?offset=-1", _root)).Headers.GetValues("Stream-Next-Offset").Single());
    }

    // ---- finding 2: subscription routes ----

    /// <summary>A pull-wake subscription over jobs/* with pending work, so it can be claimed.</summary>
    private async Task CreatePendingJobs(string id)
    {
        await CreateJsonStream("wake");
        await CreateJsonStream("jobs/q1");
        var put = await Send(HttpMethod.Put, $"/v1/stream/__ds/subscriptions/{id}", _root, "{\"type\":\"pull-wake\",\"pattern\":\"jobs/*\",\"wake_stream\":\"wake\"}");
        Assert.Equal(HttpStatusCode.Created, put.StatusCode);
        Assert.Equal(HttpStatusCode.NoContent, (await Send(HttpMethod.Post, "/v1/stream/jobs/q1", _root, "[{\"job\":1}]")).StatusCode);
    }

    [Fact]
    public async Task A_claim_needs_an_admin_token_even_behind_a_path_that_ends_in_ack()
    {
        await CreatePendingJobs("work");
        var writer = Token("user:writer", ("**", [Capability.Read, Capability.Write]));

        Assert.Equal(HttpStatusCode.Unauthorized, (await Send(HttpMethod.Post, "/v1/stream/__ds/subscriptions/work/claim/ack", null, "{\"worker\":\"evil\"}")).StatusCode);
        Assert.Equal(HttpStatusCode.Unauthorized, (await Send(HttpMethod.Post, "/v1/stream/__ds/subscriptions/work/claim", null, "{\"worker\":\"evil\"}")).StatusCode);
        Assert.Equal(HttpStatusCode.Forbidden, (await Send(HttpMethod.Post, "/v1/stream/__ds/subscriptions/work/claim", writer, "{\"worker\":\"evil\"}")).StatusCode);

        // The real worker's claim is untouched and its token still acknowledges the work.
        var claim = await Send(HttpMethod.Post, "/v1/stream/__ds/subscriptions/work/claim", _root, "{\"worker\":\"real\"}");
        Assert.Equal(HttpStatusCode.OK, claim.StatusCode);
        var lease = await Json(claim);
        var ack = new JsonObject { ["wake_id"] = lease["wake_id"]!.GetValue<string>(), ["generation"] = lease["generation"]!.GetValue<long>(), ["done"] = true }.ToJsonString();
        Assert.Equal(HttpStatusCode.OK, (await Send(HttpMethod.Post, "/v1/stream/__ds/subscriptions/work/ack", lease["token"]!.GetValue<string>(), ack)).StatusCode);
    }

    [Fact]
    public async Task Acks_and_releases_are_checked_against_their_wake_token()
    {
        await CreatePendingJobs("fenced");
        var lease = await Json(await Send(HttpMethod.Post, "/v1/stream/__ds/subscriptions/fenced/claim", _root, "{\"worker\":\"real\"}"));
        var ack = new JsonObject { ["wake_id"] = lease["wake_id"]!.GetValue<string>(), ["generation"] = lease["generation"]!.GetValue<long>(), ["done"] = true }.ToJsonString();

        // The route skips the bearer check, so its own token must be the proof: none, a forged one or an access token is fenced.
        Assert.Equal(HttpStatusCode.Conflict, (await Send(HttpMethod.Post, "/v1/stream/__ds/subscriptions/fenced/ack", null, ack)).StatusCode);
        Assert.Equal(HttpStatusCode.Conflict, (await Send(HttpMethod.Post, "/v1/stream/__ds/subscriptions/fenced/ack", "AAAA.BBBB", ack)).StatusCode);
        Assert.Equal(HttpStatusCode.Conflict, (await Send(HttpMethod.Post, "/v1/stream/__ds/subscriptions/fenced/release", _root, ack)).StatusCode);
        Assert.Equal(HttpStatusCode.Conflict, (await Send(HttpMethod.Post, "/v1/stream/__ds/subscriptions/fenced/callback", null, ack)).StatusCode);

        // The same words one segment deeper are not the wake-scoped routes.
        Assert.Equal(HttpStatusCode.Unauthorized, (await Send(HttpMethod.Post, "/v1/stream/__ds/subscriptions/fenced/ack/ack", null, ack)).StatusCode);
        Assert.Equal(HttpStatusCode.Unauthorized, (await Send(HttpMethod.Post, "/v1/stream/__ds/subscriptions/fenced/release/x/release", null, ack)).StatusCode);
        Assert.Equal(HttpStatusCode.Unauthorized, (await Send(HttpMethod.Get, "/v1/stream/__ds/subscriptions/fenced/ack", null)).StatusCode);

        Assert.Equal(HttpStatusCode.OK, (await Send(HttpMethod.Post, "/v1/stream/__ds/subscriptions/fenced/ack", lease["token"]!.GetValue<string>(), ack)).StatusCode);
    }

    [Fact]
    public async Task Removing_a_stream_from_a_subscription_needs_a_token_whatever_its_path_ends_in()
    {
        await CreateJsonStream("jobs/ack");
        var put = await Send(HttpMethod.Put, "/v1/stream/__ds/subscriptions/explicit", _root, "{\"type\":\"pull-wake\",\"streams\":[\"jobs/ack\"],\"wake_stream\":\"wake\"}");
        Assert.Equal(HttpStatusCode.Created, put.StatusCode);

        Assert.Equal(HttpStatusCode.Unauthorized, (await Send(HttpMethod.Delete, "/v1/stream/__ds/subscriptions/explicit/streams/jobs%2Fack", null)).StatusCode);
        Assert.Equal(HttpStatusCode.Unauthorized, (await Send(HttpMethod.Delete, "/v1/stream/__ds/subscriptions/explicit/streams/jobs/ack", null)).StatusCode);
        var described = await Json(await Send(HttpMethod.Get, "/v1/stream/__ds/subscriptions/explicit", _root));
        Assert.Single(described["streams"]!.AsArray());

        Assert.Equal(HttpStatusCode.NoContent, (await Send(HttpMethod.Delete, "/v1/stream/__ds/subscriptions/explicit/streams/jobs%2Fack", _root)).StatusCode);
    }

    // ---- finding 3: reads of other streams ----

    [Fact]
    public async Task A_fork_needs_read_on_its_source_and_creates_nothing_without_it()
    {
        Assert.Equal(HttpStatusCode.Created, (await Send(HttpMethod.Put, "/v1/sessions/victim", _root, "{}")).StatusCode);
        Assert.Equal(HttpStatusCode.Created, (await Send(HttpMethod.Post, "/v1/sessions/victim/messages", _root, "{\"text\":\"the secret is 42\"}")).StatusCode);
        var scratch = Token("user:mallory", ("scratch/**", [Capability.Read, Capability.Write]));
        Assert.Equal(HttpStatusCode.Forbidden, (await Send(HttpMethod.Get, "/v1/stream/sessions/victim?offset=-1", scratch)).StatusCode);

        var fork = await Send(HttpMethod.Put, "/v1/stream/scratch/c", scratch, headers: ("Stream-Forked-From", "sessions/victim"));
        Assert.Equal(HttpStatusCode.Forbidden, fork.StatusCode);
        Assert.Equal("FORBIDDEN", (await Json(fork))["error"]!["code"]!.GetValue<string>());
        Assert.Equal(HttpStatusCode.NotFound, (await Send(HttpMethod.Get, "/v1/stream/scratch/c?offset=-1", scratch)).StatusCode);

        var absolute = await Send(HttpMethod.Put, "/v1/stream/scratch/d", scratch, headers: ("Stream-Forked-From", $"{_server.BaseAddress}v1/stream/sessions%2Fvictim"));
        Assert.Equal(HttpStatusCode.Forbidden, absolute.StatusCode);

        var reader = Token("user:alice", ("scratch/**", [Capability.Read, Capability.Write]), ("sessions/victim", [Capability.Read]));
        Assert.Equal(HttpStatusCode.Created, (await Send(HttpMethod.Put, "/v1/stream/scratch/c", reader, headers: ("Stream-Forked-From", "sessions/victim"))).StatusCode);
        Assert.Contains("42", await (await Send(HttpMethod.Get, "/v1/stream/scratch/c?offset=-1", reader)).Content.ReadAsStringAsync(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_subscription_needs_read_on_everything_it_covers_and_write_on_its_wake_stream()
    {
        await CreateJsonStream("wake");
        await CreateJsonStream("sessions/victim");
        var jobsAdmin = Token("svc:jobs", ("__ds", [Capability.Admin]), ("jobs/**", [Capability.Read]), ("wake", [Capability.Write]));
        string Body(string selector, string wake = "wake") => $"{{\"type\":\"pull-wake\",{selector},\"wake_stream\":\"{wake}\"}}";

        Assert.Equal(HttpStatusCode.Created, (await Send(HttpMethod.Put, "/v1/stream/__ds/subscriptions/ok", jobsAdmin, Body("\"pattern\":\"jobs/*/q\""))).StatusCode);
        Assert.Equal(HttpStatusCode.Created, (await Send(HttpMethod.Put, "/v1/stream/__ds/subscriptions/ok2", jobsAdmin, Body("\"streams\":[\"jobs/a\"]"))).StatusCode);

        foreach (var selector in new[] { "\"pattern\":\"**\"", "\"pattern\":\"sessions/*\"", "\"pattern\":\"*/victim\"", "\"pattern\":\"jobs/*\",\"streams\":[\"sessions/victim\"]" })
        {
            var refused = await Send(HttpMethod.Put, "/v1/stream/__ds/subscriptions/spy", jobsAdmin, Body(selector));
            Assert.Equal(HttpStatusCode.Forbidden, refused.StatusCode);
        }

        Assert.Equal(HttpStatusCode.Forbidden, (await Send(HttpMethod.Put, "/v1/stream/__ds/subscriptions/spy", jobsAdmin, Body("\"pattern\":\"jobs/*\"", wake: "private/wake"))).StatusCode);
        Assert.Equal(HttpStatusCode.BadRequest, (await Send(HttpMethod.Put, "/v1/stream/__ds/subscriptions/spy", jobsAdmin, Body("\"pattern\":\"jobs/*\"", wake: "sessions/victim"))).StatusCode);
        Assert.Equal(HttpStatusCode.Forbidden, (await Send(HttpMethod.Post, "/v1/stream/__ds/subscriptions/ok/streams", jobsAdmin, "{\"streams\":[\"sessions/victim\"]}")).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await Send(HttpMethod.Get, "/v1/stream/__ds/subscriptions/spy", jobsAdmin)).StatusCode);
        var ok = await Json(await Send(HttpMethod.Get, "/v1/stream/__ds/subscriptions/ok", jobsAdmin));
        Assert.Empty(ok["streams"]!.AsArray());
    }

    // ---- finding 11: caching ----

    [Fact]
    public async Task Catch_up_reads_under_access_control_are_cached_only_privately_per_token()
    {
        await CreateJsonStream("cached", "[{\"a\":1}]");
        var response = await Send(HttpMethod.Get, "/v1/stream/cached?offset=-1", _root);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.True(response.Headers.CacheControl!.Private);
        Assert.False(response.Headers.CacheControl.Public);
        Assert.Equal(TimeSpan.FromSeconds(60), response.Headers.CacheControl.MaxAge);
        Assert.Contains("Authorization", response.Headers.Vary);

        var etag = response.Headers.ETag!.Tag;
        var revalidated = await Send(HttpMethod.Get, "/v1/stream/cached?offset=-1", _root, headers: ("If-None-Match", etag));
        Assert.Equal(HttpStatusCode.NotModified, revalidated.StatusCode);
        Assert.True(revalidated.Headers.CacheControl!.Private);
        Assert.Contains("Authorization", revalidated.Headers.Vary);
    }

    [Fact]
    public async Task Catch_up_reads_without_access_control_keep_the_configured_cache_control()
    {
        await using var open = await InProcessServer.StartAsync();
        Assert.Equal(HttpStatusCode.Created, (await open.Client.PutAsync("/v1/stream/cached", new StringContent("[{\"a\":1}]", Encoding.UTF8, "application/json"))).StatusCode);
        var response = await open.Client.GetAsync("/v1/stream/cached?offset=-1");
        Assert.Equal("public, max-age=60, stale-while-revalidate=300", response.Headers.GetValues("Cache-Control").Single());
        Assert.DoesNotContain("Authorization", response.Headers.Vary);
    }

    // ---- finding 13: capability names ----

    private static string RawToken(string grants) => new JsonWebTokenHandler().CreateToken(new SecurityTokenDescriptor
    {
        Subject = new ClaimsIdentity([new Claim("sub", "user:mallory")]),
        Claims = new Dictionary<string, object> { ["grants"] = JsonDocument.Parse(grants).RootElement.Clone() },
        NotBefore = DateTime.UtcNow.AddMinutes(-1),
        IssuedAt = DateTime.UtcNow.AddMinutes(-1),
        Expires = DateTime.UtcNow.AddMinutes(5),
        SigningCredentials = new SigningCredentials(new SymmetricSecurityKey(Encoding.UTF8.GetBytes(Key)), SecurityAlgorithms.HmacSha256),
    });

    [Theory]
    [InlineData(253_402_300_780L)] // within the clock skew of the last second a date can hold
    [InlineData(253_402_300_799L)] // that last second
    [InlineData(100_000_000_000_000L)] // far past it, as "never expiring" tokens are sometimes made
    public async Task A_token_that_expires_past_the_range_of_a_date_is_served_as_one_that_does_not_expire(long exp)
    {
        await CreateJsonStream("far/s", "[1]");
        var token = new JsonWebTokenHandler().CreateToken(new SecurityTokenDescriptor
        {
            Subject = new ClaimsIdentity([new Claim("sub", "user:far")]),
            Claims = new Dictionary<string, object> { ["grants"] = JsonDocument.Parse("{\"far/**\":[\"read\"]}").RootElement.Clone(), ["exp"] = exp },
            NotBefore = DateTime.UtcNow.AddMinutes(-1),
            IssuedAt = DateTime.UtcNow.AddMinutes(-1),
            SigningCredentials = new SigningCredentials(new SymmetricSecurityKey(Encoding.UTF8.GetBytes(Key)), SecurityAlgorithms.HmacSha256),
        });
        using var read = await Send(HttpMethod.Get, "/v1/stream/far/s?offset=-1", token);
        Assert.Equal(HttpStatusCode.OK, read.StatusCode);
        Assert.Equal("[1]", await read.Content.ReadAsStringAsync());
        Assert.Equal(HttpStatusCode.Forbidden, (await Send(HttpMethod.Post, "/v1/stream/far/s", token, "[2]")).StatusCode);
    }

    public static TheoryData<string> LooseCapabilities => new()
    {
        "[\"write,control\"]",
        "[\"3\"]",
        "[\" admin \"]",
        "[\"Admin\"]",
        "[\"ADMIN\"]",
        "[3]",
        "[3.5, true, null, {\"admin\":true}, [\"admin\"]]",
        "\"admin\"",
        "3",
    };

    [Theory]
    [MemberData(nameof(LooseCapabilities))]
    public async Task A_capability_that_is_not_exactly_a_known_lowercase_name_grants_nothing(string capabilities)
    {
        await CreateJsonStream("loose/s", "[]");
        var token = RawToken($"{{\"loose/**\":{capabilities}}}");
        var delete = await Send(HttpMethod.Delete, "/v1/stream/loose/s", token);
        Assert.Equal(HttpStatusCode.Forbidden, delete.StatusCode);
    }

    [Fact]
    public async Task Unknown_capabilities_beside_known_ones_are_ignored()
    {
        await CreateJsonStream("mixed/s", "[]");
        var token = RawToken("{\"mixed/**\":[\"read\", 7, \"teleport\", \"admin\"], \"other/**\": 5}");
        Assert.Equal(HttpStatusCode.OK, (await Send(HttpMethod.Get, "/v1/stream/mixed/s?offset=-1", token)).StatusCode);
        Assert.Equal(HttpStatusCode.Forbidden, (await Send(HttpMethod.Post, "/v1/stream/mixed/s", token, "[1]")).StatusCode);
        Assert.Equal(HttpStatusCode.NoContent, (await Send(HttpMethod.Delete, "/v1/stream/mixed/s", token)).StatusCode);
    }

    // ---- finding 12: glob CPU ----

    [Fact]
    public async Task A_hostile_subscription_pattern_is_answered_promptly_and_the_server_stays_responsive()
    {
        var deep = string.Join('/', Enumerable.Repeat("a", 400));
        await CreateJsonStream(deep);

        var watch = Stopwatch.StartNew();
        var put = await Send(HttpMethod.Put, "/v1/stream/__ds/subscriptions/hostile", _root, "{\"type\":\"pull-wake\",\"pattern\":\"**/**/**/**/**/z\",\"wake_stream\":\"wake\"}");
        Assert.Equal(HttpStatusCode.Created, put.StatusCode);
        Assert.True(watch.Elapsed < TimeSpan.FromSeconds(10), $"The create took {watch.Elapsed}.");

        // Appends are matched against the pattern too.
        watch.Restart();
        Assert.Equal(HttpStatusCode.NoContent, (await Send(HttpMethod.Post, $"/v1/stream/{deep}", _root, "[1]")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await Send(HttpMethod.Get, $"/v1/stream/{deep}?offset=-1", _root)).StatusCode);
        Assert.True(watch.Elapsed < TimeSpan.FromSeconds(10), $"The append and read took {watch.Elapsed}.");
    }

    [Fact]
    public async Task A_subscription_pattern_past_the_size_limits_gets_400()
    {
        var tooManySegments = string.Join('/', Enumerable.Repeat("**", 33));
        var tooLong = new string('x', 1025);
        foreach (var pattern in new[] { tooManySegments, tooLong })
        {
            var put = await Send(HttpMethod.Put, "/v1/stream/__ds/subscriptions/big", _root, $"{{\"type\":\"pull-wake\",\"pattern\":\"{pattern}\",\"wake_stream\":\"wake\"}}");
            Assert.Equal(HttpStatusCode.BadRequest, put.StatusCode);
            Assert.Equal("PATTERN_TOO_LARGE", (await Json(put))["error"]!["code"]!.GetValue<string>());
        }

        Assert.Equal(HttpStatusCode.NotFound, (await Send(HttpMethod.Get, "/v1/stream/__ds/subscriptions/big", _root)).StatusCode);
    }

    [Fact]
    public async Task A_message_that_would_interrupt_a_run_needs_control()
    {
        var writer = Token("user:bob", ("sessions/**", [Capability.Read, Capability.Write]));
        var controller = Token("user:alice", ("sessions/**", [Capability.Read, Capability.Write, Capability.Control]));
        Assert.Equal(HttpStatusCode.Created, (await Send(HttpMethod.Put, "/v1/sessions/interrupting", _root, "{\"newMessagePolicy\":\"interrupt\"}")).StatusCode);
        Assert.Equal(HttpStatusCode.Created, (await Send(HttpMethod.Post, "/v1/sessions/interrupting/messages", writer, "{\"text\":\"first\"}")).StatusCode);
        var agent = Token("agent:test", ("sessions/**", [Capability.Read, Capability.Write]));
        var start = await Send(HttpMethod.Post, "/v1/stream/sessions/interrupting", agent, """
            [{"type":"run","key":"r1","value":{"id":"r1","agent":"agent:test","messageId":"m-reply","status":"started"},"headers":{"operation":"insert"}},
             {"type":"message","key":"m-reply","value":{"id":"m-reply","role":"assistant","author":"agent:test","runId":"r1","parts":[],"status":"streaming"},"headers":{"operation":"insert"}}]
            """);
        Assert.True(start.IsSuccessStatusCode, await start.Content.ReadAsStringAsync());

        // Without control the message would cancel the agent's run: refused, over the sessions API and the AI SDK chat.
        var refused = await Send(HttpMethod.Post, "/v1/sessions/interrupting/messages", writer, "{\"text\":\"stop that\"}");
        Assert.Equal(HttpStatusCode.Conflict, refused.StatusCode);
        Assert.Contains("RUN_ACTIVE", await refused.Content.ReadAsStringAsync(), StringComparison.Ordinal);
        var chat = await Send(HttpMethod.Post, "/api/chat", writer, "{\"id\":\"interrupting\",\"messages\":[{\"id\":\"m-chat\",\"role\":\"user\",\"parts\":[{\"type\":\"text\",\"text\":\"stop that\"}]}]}");
        Assert.Equal(HttpStatusCode.Conflict, chat.StatusCode);
        var snapshot = await (await Send(HttpMethod.Get, "/v1/stream/sessions/interrupting?offset=-1", _root)).Content.ReadAsStringAsync();
        Assert.DoesNotContain("cancelled", snapshot, StringComparison.Ordinal);
        Assert.DoesNotContain("stop that", snapshot, StringComparison.Ordinal);

        // With control it interrupts, as the session's policy says.
        Assert.Equal(HttpStatusCode.Created, (await Send(HttpMethod.Post, "/v1/sessions/interrupting/messages", controller, "{\"text\":\"stop that\"}")).StatusCode);
        var after = await (await Send(HttpMethod.Get, "/v1/stream/sessions/interrupting?offset=-1", _root)).Content.ReadAsStringAsync();
        Assert.Contains("\"status\":\"cancelled\"", after, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("auth0|abc123")]
    [InlineData("someone@example.com")]
    public async Task A_token_subject_spelled_as_an_identity_provider_spells_it_can_be_present_leave_and_take_control(string subject)
    {
        var token = Token(subject, ("sessions/**", [Capability.Read, Capability.Write, Capability.Control]));
        Assert.Equal(HttpStatusCode.Created, (await Send(HttpMethod.Put, "/v1/sessions/subjects", _root, "{}")).StatusCode);

        Assert.Equal(HttpStatusCode.OK, (await Send(HttpMethod.Post, "/v1/sessions/subjects/presence", token, "{\"kind\":\"human\"}")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await Send(HttpMethod.Post, "/v1/sessions/subjects/handoff", token, "{}")).StatusCode);
        var held = await (await Send(HttpMethod.Get, "/v1/stream/sessions/subjects?offset=-1", _root)).Content.ReadAsStringAsync();
        Assert.Contains($"\"holder\":\"{subject}\"", held, StringComparison.Ordinal);
        Assert.Equal(HttpStatusCode.OK, (await Send(HttpMethod.Delete, "/v1/sessions/subjects/handoff", token)).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await Send(HttpMethod.Delete, $"/v1/sessions/subjects/presence/{Uri.EscapeDataString(subject)}", token)).StatusCode);

        // Someone else's id is still refused, and an id a body claims keeps the participant alphabet.
        Assert.Equal(HttpStatusCode.Forbidden, (await Send(HttpMethod.Delete, "/v1/sessions/subjects/presence/user%3Aother", token)).StatusCode);
    }
}
