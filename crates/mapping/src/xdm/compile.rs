//! The mapping's view of a schema compiled by `batchdrop-xdm` (the one compiler of XDM
//! schemas: `$ref`s, `allOf`, types and constraints; a schema it cannot understand is refused
//! there, not at a record): its tree, taken over into the nodes [`super::Schema`] walks, with
//! the properties in the schema's order and looked up by hash where there are many.
//!
//! This module must not read JSON Schema itself.

use batchdrop_xdm as xdm;

use super::*;

/// The mapping's node of one field of a compiled schema.
pub(super) fn node(field: &xdm::Node) -> Node {
    Node {
        kind: kind(field),
        format: field.format,
        enumeration: field.enumeration.clone(),
        minimum: field.minimum,
        maximum: field.maximum,
        exclusive_minimum: field.exclusive_minimum,
        exclusive_maximum: field.exclusive_maximum,
        min_length: field.min_length,
        max_length: field.max_length,
        min_items: field.min_items,
        max_items: field.max_items,
    }
}

fn kind(field: &xdm::Node) -> Kind {
    match &field.ty {
        // A field that can only be null takes anything here, as an untyped one.
        xdm::Ty::Any | xdm::Ty::Null => Kind::Any,
        xdm::Ty::Object(object) => Kind::Object(Box::new(self::object(object))),
        xdm::Ty::Array(items) => Kind::Array(items.as_deref().map(|i| Box::new(node(i)))),
        xdm::Ty::String => Kind::String,
        xdm::Ty::Integer => Kind::Integer(match field.width {
            xdm::IntWidth::Byte => IntWidth::Byte,
            xdm::IntWidth::Short => IntWidth::Short,
            xdm::IntWidth::Int => IntWidth::Int,
            xdm::IntWidth::Long => IntWidth::Long,
        }),
        xdm::Ty::Number => Kind::Number,
        xdm::Ty::Boolean => Kind::Boolean,
    }
}

fn object(compiled: &xdm::Obj) -> Object {
    let properties: Vec<(String, Node)> = compiled
        .order
        .iter()
        .map(|name| (name.clone(), node(&compiled.props[name])))
        .collect();
    let index = (properties.len() > INDEXED_PROPERTIES).then(|| {
        properties
            .iter()
            .enumerate()
            .map(|(i, (name, _))| (name.clone(), i))
            .collect()
    });
    Object {
        properties,
        index,
        required: compiled.required.clone(),
        additional: match &compiled.additional {
            xdm::Additional::Ignored => Additional::Ignored,
            xdm::Additional::Forbidden => Additional::Forbidden,
            xdm::Additional::Schema(values) => Additional::Map(Box::new(node(values))),
        },
    }
}
