namespace DurableSessions.Core.Tests;

public sealed class StreamContentTypeTests
{
    [Theory]
    [InlineData("application/json", "application/json")]
    [InlineData("text/plain", "text/plain")]
    [InlineData("Application/JSON", "application/json")]
    [InlineData("application/json; charset=utf-8", "application/json")]
    [InlineData("  text/plain  ", "text/plain")]
    [InlineData("TEXT/Plain ;x=Y", "text/plain")]
    [InlineData("text/ÉTÉ", "text/été")]
    public void The_media_type_is_without_parameters_trimmed_and_lower_case(string contentType, string media)
    {
        Assert.Equal(media, StreamContentType.MediaType(contentType));
        Assert.True(StreamContentType.Matches(contentType, media));
    }

    [Fact]
    public void A_media_type_already_in_its_plain_form_is_returned_as_it_is()
    {
        var contentType = new string("application/json".AsSpan());
        Assert.Same(contentType, StreamContentType.MediaType(contentType));
        Assert.True(StreamContentType.IsJson(contentType));
        Assert.False(StreamContentType.IsJson("application/jsonx"));
    }
}
