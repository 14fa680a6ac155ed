//! Building data sets for the result objects: typed element puts, and the header every result
//! object starts with: Patient and General Study copied from the source study, SOP Common
//! (PS3.3 C.12.1) and General Series (PS3.3 C.7.3.1) of its own new series.

use dicom_core::value::DataSetSequence;
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::mem::InMemElement;
use dicom_object::InMemDicomObject;

use crate::ResultInput;

/// The SOP and series identity of one result object.
pub(crate) struct SeriesHeader<'a> {
    /// SOP Class UID (0008,0016).
    pub sop_class_uid: &'a str,
    /// SOP Instance UID (0008,0018).
    pub sop_instance_uid: &'a str,
    /// Modality (0008,0060), e.g. "SR", "SEG", "OT".
    pub modality: &'a str,
    /// Series Instance UID (0020,000E).
    pub series_instance_uid: &'a str,
    /// Series Number (0020,0011).
    pub series_number: i32,
    /// Series Description (0008,103E), cut to the 64 characters of LO.
    pub series_description: &'a str,
}

/// A new data set with the source's Patient/Study attributes, SOP Common (Instance Creation
/// Date/Time = the result set's content date/time) and General Series (Series Date/Time likewise).
pub(crate) fn new_instance(input: &ResultInput, h: &SeriesHeader) -> InMemDicomObject {
    let (date, time) = (input.content_date.as_str(), input.content_time.as_str());
    let mut obj = InMemDicomObject::new_empty();
    input.source.put_into(&mut obj);
    put_str(&mut obj, tags::SOP_CLASS_UID, VR::UI, h.sop_class_uid);
    put_str(&mut obj, tags::SOP_INSTANCE_UID, VR::UI, h.sop_instance_uid);
    put_str(&mut obj, tags::INSTANCE_CREATION_DATE, VR::DA, date);
    put_str(&mut obj, tags::INSTANCE_CREATION_TIME, VR::TM, time);
    put_str(&mut obj, tags::MODALITY, VR::CS, h.modality);
    put_str(&mut obj, tags::SERIES_INSTANCE_UID, VR::UI, h.series_instance_uid);
    put_str(&mut obj, tags::SERIES_NUMBER, VR::IS, &h.series_number.to_string());
    put_str(&mut obj, tags::SERIES_DATE, VR::DA, date);
    put_str(&mut obj, tags::SERIES_TIME, VR::TM, time);
    put_str(&mut obj, tags::SERIES_DESCRIPTION, VR::LO, &truncate(h.series_description, 64));
    obj
}

/// A sequence element of defined items.
pub(crate) fn seq(tag: Tag, items: Vec<InMemDicomObject>) -> InMemElement {
    DataElement::new(tag, VR::SQ, DataSetSequence::from(items))
}

/// Puts a sequence of defined items.
pub(crate) fn put_seq(obj: &mut InMemDicomObject, tag: Tag, items: Vec<InMemDicomObject>) {
    obj.put(seq(tag, items));
}

/// Puts one string value.
pub(crate) fn put_str(obj: &mut InMemDicomObject, tag: Tag, vr: VR, value: &str) {
    obj.put(DataElement::new(tag, vr, PrimitiveValue::from(value)));
}

/// Puts a multi-valued string attribute.
pub(crate) fn put_strs<S: AsRef<str>>(obj: &mut InMemDicomObject, tag: Tag, vr: VR, values: &[S]) {
    let values: Vec<String> = values.iter().map(|s| s.as_ref().to_owned()).collect();
    obj.put(DataElement::new(tag, vr, PrimitiveValue::Strs(values.into())));
}

/// Puts US values.
pub(crate) fn put_u16(obj: &mut InMemDicomObject, tag: Tag, values: &[u16]) {
    obj.put(DataElement::new(tag, VR::US, PrimitiveValue::U16(values.to_vec().into())));
}

/// `s` cut to at most `max` characters (LO and similar limits count characters).
pub(crate) fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}
