//! Media never reaches the network: a playlist uploaded as video, whose
//! URLs point at a listener on loopback, is refused as unsupported media
//! and the listener sees no connection.

use std::net::TcpListener;
use std::time::Duration;

use crate::support::*;

#[test]
fn a_playlist_is_no_video_and_its_urls_are_never_fetched() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("listener");
    listener.set_nonblocking(true).expect("nonblocking");
    let at = listener.local_addr().expect("addr");
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), "");
    let token = server.token("playlists");
    let hls = format!(
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:10\n#EXT-X-MEDIA-SEQUENCE:0\n\
         #EXTINF:10.0,\nhttp://{at}/segment0.ts\n#EXTINF:10.0,\nhttp://{at}/segment1.ts\n#EXT-X-ENDLIST\n"
    );
    let master = format!(
        "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=800000,RESOLUTION=640x360\nhttp://{at}/low.m3u8\n"
    );
    let dash = format!(
        "<?xml version=\"1.0\"?>\n<MPD xmlns=\"urn:mpeg:dash:schema:mpd:2011\" type=\"static\" \
         mediaPresentationDuration=\"PT10S\" minBufferTime=\"PT2S\" profiles=\"urn:mpeg:dash:profile:isoff-on-demand:2011\">\
         <Period><AdaptationSet mimeType=\"video/mp4\"><Representation id=\"1\" bandwidth=\"800000\" width=\"640\" height=\"360\" codecs=\"avc1.64001e\">\
         <BaseURL>http://{at}/video.mp4</BaseURL><SegmentBase indexRange=\"0-100\"/></Representation></AdaptationSet></Period></MPD>\n"
    );
    for (name, body) in [("a.mp4", hls), ("b.mp4", master), ("c.mp4", dash)] {
        let r = server.upload(&token, &format!("filename={name}"), body.as_bytes());
        assert_eq!(r.status, 415, "{name}: {r:?}");
        assert_eq!(r.code(), "unsupported-media", "{name}");
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        listener.accept().is_err(),
        "a playlist's URL was fetched from the server"
    );
    assert!(server.temp_files().is_empty(), "{:?}", server.temp_files());
}
