using System.Net;
using DurableSessions.AspNetCore.Outbound;

namespace DurableSessions.FunctionalTests;

/// <summary>The address classifier behind every outbound connection (webhooks, notifications).</summary>
public sealed class OutboundAddressPolicyTests
{
    [Theory]
    [InlineData("0.0.0.0")]
    [InlineData("0.1.2.3")]
    [InlineData("10.0.0.1")]
    [InlineData("100.64.0.1")]
    [InlineData("100.127.255.254")]
    [InlineData("169.254.169.254")]
    [InlineData("172.16.0.1")]
    [InlineData("172.31.255.255")]
    [InlineData("192.0.0.1")]
    [InlineData("192.0.0.170")]
    [InlineData("192.0.2.1")]
    [InlineData("192.88.99.1")]
    [InlineData("192.168.1.1")]
    [InlineData("198.18.0.1")]
    [InlineData("198.19.255.255")]
    [InlineData("198.51.100.7")]
    [InlineData("203.0.113.9")]
    [InlineData("224.0.0.1")]
    [InlineData("239.255.255.250")]
    [InlineData("240.0.0.1")]
    [InlineData("255.255.255.255")]
    [InlineData("::")]
    [InlineData("::ffff:10.0.0.1")]
    [InlineData("::ffff:169.254.169.254")]
    [InlineData("::ffff:0:10.0.0.1")]
    [InlineData("::10.0.0.1")]
    [InlineData("64:ff9b::a9fe:a9fe")]
    [InlineData("64:ff9b:1::1")]
    [InlineData("64:ff9b:1::8.8.8.8")]
    [InlineData("2002:c0a8:101::")]
    [InlineData("2002:a00:1::1")]
    [InlineData("2001::1")]
    [InlineData("2001:0:4136:e378:8000:63bf:3fff:fdd2")]
    [InlineData("2001:db8::1")]
    [InlineData("3fff::1")]
    [InlineData("fc00::1")]
    [InlineData("fd12:3456::1")]
    [InlineData("fe80::1")]
    [InlineData("febf::1")]
    [InlineData("fec0::1")]
    [InlineData("ff02::1")]
    [InlineData("100::1")]
    [InlineData("::2")]
    public void Private_and_special_addresses_are_refused_even_when_loopback_is_allowed(string text)
    {
        var address = IPAddress.Parse(text);
        Assert.NotNull(OutboundAddressPolicy.Check(address, allowLoopback: true));
        Assert.NotNull(OutboundAddressPolicy.Check(address, allowLoopback: false));
        Assert.False(OutboundAddressPolicy.IsPublic(address));
    }

    [Theory]
    [InlineData("127.0.0.1")]
    [InlineData("127.1.2.3")]
    [InlineData("::1")]
    [InlineData("::ffff:127.0.0.1")]
    [InlineData("::127.0.0.1")]
    [InlineData("::ffff:0:127.0.0.1")]
    [InlineData("64:ff9b::7f00:1")]
    [InlineData("2002:7f00:1::")]
    public void Loopback_in_every_spelling_is_refused_unless_allowed(string text)
    {
        var address = IPAddress.Parse(text);
        Assert.NotNull(OutboundAddressPolicy.Check(address, allowLoopback: false));
        Assert.Null(OutboundAddressPolicy.Check(address, allowLoopback: true));
    }

    [Theory]
    [InlineData("8.8.8.8")]
    [InlineData("1.1.1.1")]
    [InlineData("100.63.255.255")]
    [InlineData("100.128.0.1")]
    [InlineData("172.15.255.255")]
    [InlineData("172.32.0.1")]
    [InlineData("192.0.1.1")]
    [InlineData("198.17.255.255")]
    [InlineData("198.20.0.1")]
    [InlineData("223.255.255.254")]
    [InlineData("::ffff:8.8.8.8")]
    [InlineData("64:ff9b::808:808")]
    [InlineData("2002:808:808::1")]
    [InlineData("2606:4700:4700::1111")]
    [InlineData("2a00:1450:4001:81c::200e")]
    public void Public_unicast_addresses_are_allowed(string text)
    {
        var address = IPAddress.Parse(text);
        Assert.Null(OutboundAddressPolicy.Check(address, allowLoopback: false));
        Assert.True(OutboundAddressPolicy.IsPublic(address));
    }
}
