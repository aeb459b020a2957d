//! `glipdetect`: an in-place video filter (BaseTransform) running GLIP on every frame.

use gst::glib;
use gst::prelude::*;

mod imp;

glib::wrapper! {
    pub struct GlipDetect(ObjectSubclass<imp::GlipDetect>)
        @extends gst_base::BaseTransform, gst::Element, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(
        Some(plugin),
        "glipdetect",
        gst::Rank::NONE,
        GlipDetect::static_type(),
    )
}
