//! The GStreamer plugin `glip` with one element, `glipdetect`: GLIP phrase grounding on raw
//! video frames (glip-rt's Detector). Each buffer leaves carrying one
//! `GstVideoRegionOfInterestMeta` per detection and the element posts the frame's detections
//! as an element message; the pixels and timestamps pass through untouched.

use gst::glib;

mod glipdetect;

fn plugin_init(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    glipdetect::register(plugin)
}

gst::plugin_define!(
    glip,
    env!("CARGO_PKG_DESCRIPTION"),
    plugin_init,
    env!("CARGO_PKG_VERSION"),
    // GStreamer accepts only its own list of license names; glip-rt is MIT or Apache-2.0.
    "MIT/X11",
    "glip-rt",
    "glip-rt",
    "glip-rt (this repository)"
);
