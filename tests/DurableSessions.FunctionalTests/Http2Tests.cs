using System.Net;
using System.Net.Security;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;

namespace DurableSessions.FunctionalTests;

/// <summary>
/// HTTP/2 for live reads: over TLS (ALPN) and over cleartext with prior knowledge (h2c), many SSE streams share one
/// connection, where HTTP/1.1 would need one connection each.
/// </summary>
public sealed class Http2Tests
{
    [Fact]
    public async Task Many_sse_streams_share_one_http2_connection_over_tls_and_over_h2c()
    {
        var directory = ServerProcess.TempDirectory();
        Directory.CreateDirectory(directory);
        var certificatePath = Path.Combine(directory, "localhost.pfx");
        using (var key = RSA.Create(2048))
        {
            var request = new CertificateRequest("CN=127.0.0.1", key, HashAlgorithmName.SHA256, RSASignaturePadding.Pkcs1);
            var names = new SubjectAlternativeNameBuilder();
            names.AddIpAddress(IPAddress.Loopback);
            request.CertificateExtensions.Add(names.Build());
            using var certificate = request.CreateSelfSigned(DateTimeOffset.UtcNow.AddMinutes(-5), DateTimeOffset.UtcNow.AddDays(1));
            await File.WriteAllBytesAsync(certificatePath, certificate.Export(X509ContentType.Pfx, "test"));
        }

        var ports = ServerProcess.FreePorts(3);
        var (http, https, h2c) = (ports[0], ports[1], ports[2]);
        await using var server = await ServerProcess.StartOnAsync(directory, http,
            $"--Kestrel:Endpoints:Http:Url=http://127.0.0.1:{http}",
            $"--Kestrel:Endpoints:Https:Url=https://127.0.0.1:{https}",
            $"--Kestrel:Endpoints:Https:Certificate:Path={certificatePath}",
            "--Kestrel:Endpoints:Https:Certificate:Password=test",
            $"--Kestrel:Endpoints:H2c:Url=http://127.0.0.1:{h2c}",
            "--Kestrel:Endpoints:H2c:Protocols=Http2");

        foreach (var address in new[] { new Uri($"https://127.0.0.1:{https}"), new Uri($"http://127.0.0.1:{h2c}") })
        {
            // One connection at most: twenty concurrent SSE responses can only all be live if they are multiplexed.
            using var handler = new SocketsHttpHandler
            {
                MaxConnectionsPerServer = 1,
                EnableMultipleHttp2Connections = false,
                SslOptions = new SslClientAuthenticationOptions { RemoteCertificateValidationCallback = (_, _, _, _) => true },
            };
            using var client = new HttpClient(handler)
            {
                BaseAddress = address,
                DefaultRequestVersion = HttpVersion.Version20,
                DefaultVersionPolicy = HttpVersionPolicy.RequestVersionExact,
            };
            // Kestrel serves each endpoint as soon as it is bound: the HTTP one the start-up check used may be up before
            // the TLS one has loaded its certificate.
            var deadline = DateTime.UtcNow.AddSeconds(30);
            while (true)
            {
                try
                {
                    using var health = await client.GetAsync(new Uri("/health", UriKind.Relative));
                    if (health.IsSuccessStatusCode)
                    {
                        break;
                    }
                }
                catch (HttpRequestException) when (DateTime.UtcNow < deadline)
                {
                }

                Assert.True(DateTime.UtcNow < deadline, $"{address} never answered");
                await Task.Delay(50);
            }

            var run = Guid.NewGuid().ToString("N")[..8];
            const int Streams = 20;
            for (var i = 0; i < Streams; i++)
            {
                var created = await client.PutAsync(new Uri($"/v1/stream/h2/{run}/{i}", UriKind.Relative), new StringContent("[]", Encoding.UTF8, "application/json"));
                Assert.Equal(HttpStatusCode.Created, created.StatusCode);
                Assert.Equal(HttpVersion.Version20, created.Version);
            }

            var readers = new List<(HttpResponseMessage Response, StreamReader Reader)>();
            for (var i = 0; i < Streams; i++)
            {
                var response = await client.GetAsync(new Uri($"/v1/stream/h2/{run}/{i}?offset=-1&live=sse", UriKind.Relative), HttpCompletionOption.ResponseHeadersRead);
                Assert.Equal(HttpStatusCode.OK, response.StatusCode);
                Assert.Equal(HttpVersion.Version20, response.Version);
                readers.Add((response, new StreamReader(await response.Content.ReadAsStreamAsync())));
            }

            for (var i = 0; i < Streams; i++)
            {
                var appended = await client.PostAsync(new Uri($"/v1/stream/h2/{run}/{i}", UriKind.Relative), new StringContent($"{{\"i\":{i}}}", Encoding.UTF8, "application/json"));
                Assert.Equal(HttpStatusCode.NoContent, appended.StatusCode);
            }

            // Every reader, all live at once on the one connection, gets its own stream's event.
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
            for (var i = 0; i < Streams; i++)
            {
                var expected = $"data:[{{\"i\":{i}}}]";
                string? line;
                do
                {
                    line = await readers[i].Reader.ReadLineAsync(timeout.Token);
                }
                while (line is not null && line != expected);

                Assert.Equal(expected, line);
            }

            foreach (var (response, reader) in readers)
            {
                reader.Dispose();
                response.Dispose();
            }
        }
    }
}
