//! Record-batch v2 header view: parse, validate, patch in place (codec helper).
