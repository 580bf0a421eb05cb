using System.Net;
using DurableSessions.AspNetCore.Connections;

namespace DurableSessions.FunctionalTests;

public sealed class ConnectionLimiterTests
{
    [Theory]
    [InlineData("2001:db8:1:2:aaaa:bbbb:cccc:dddd", "2001:db8:1:2::")]
    [InlineData("2001:db8:1:2::1", "2001:db8:1:2::")]
    [InlineData("203.0.113.7", "203.0.113.7")]
    public void Clients_are_counted_per_ipv4_address_and_per_ipv6_64_network(string address, string client)
        => Assert.Equal(IPAddress.Parse(client), ConnectionLimiter.ClientKey(IPAddress.Parse(address)));
}
