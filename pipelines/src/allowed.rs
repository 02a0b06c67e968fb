//! The elements media may be handed to: an allow-list of demuxers and no
//! element that opens a network connection or another file. GStreamer
//! plugs whatever claims the bytes: an HLS or DASH playlist uploaded as
//! `video/mp4` was handed to the adaptive demuxers, whose HTTP source
//! fetched the URLs inside it. Such elements are taken out of the
//! registry of every process that reads media, so they cannot be plugged
//! (a playlist then finds no demuxer and is `unsupported-media`).

use gst::prelude::*;

/// The containers vidmill reads (README, "What vidmill takes"), and the
/// tag readers that may sit in front of a stream.
const DEMUXERS: &[&str] = &[
    "qtdemux",
    "matroskademux",
    "avidemux",
    "asfdemux",
    "flvdemux",
    "tsdemux",
    "mpegpsdemux",
    "oggdemux",
    "dvdemux",
    "mxfdemux",
    "id3demux",
    "apedemux",
];

/// Sources and URI handlers that touch only what they are given: the
/// uploaded file and the outputs, memory, and the test patterns `synth`
/// draws with.
const ENDPOINTS: &[&str] = &[
    "filesrc",
    "filesink",
    "appsrc",
    "appsink",
    "videotestsrc",
    "audiotestsrc",
];

/// Whether media may be handed to elements of `factory`.
fn allowed(factory: &gst::ElementFactory) -> bool {
    let name = factory.name();
    let klass = factory.klass();
    if klass.contains("Network") {
        return false;
    }
    if klass.contains("Demux") {
        return DEMUXERS.contains(&name.as_str());
    }
    // Sources, and anything else that answers to a URI (a sink that
    // writes to `udp://`, `giosrc` reading `smb://`).
    let reads_or_writes_uris = factory.uri_type() != gst::URIType::Unknown;
    if klass.contains("Source") || reads_or_writes_uris {
        return ENDPOINTS.contains(&name.as_str());
    }
    true
}

/// Takes every element that is not allowed out of this process's registry.
pub(crate) fn remove_the_rest() {
    let registry = gst::Registry::get();
    for feature in registry.features(gst::ElementFactory::static_type()) {
        let Ok(factory) = feature.clone().downcast::<gst::ElementFactory>() else {
            continue;
        };
        if !allowed(&factory) {
            registry.remove_feature(&feature);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_allowed_elements_are_left() {
        crate::init().expect("gstreamer");
        for gone in [
            "hlsdemux",
            "dashdemux",
            "souphttpsrc",
            "splitmuxsrc",
            "udpsrc",
            "giosrc",
        ] {
            assert!(
                gst::ElementFactory::find(gone).is_none(),
                "{gone} is still there"
            );
        }
        for kept in [
            "qtdemux",
            "matroskademux",
            "filesrc",
            "filesink",
            "appsrc",
            "h264parse",
        ] {
            assert!(gst::ElementFactory::find(kept).is_some(), "{kept} is gone");
        }
        assert!(crate::missing_elements().expect("elements").is_empty());
    }
}
