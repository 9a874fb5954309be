//! Strict wire types for request bodies.
//!
//! poem-openapi's `String` accepts numbers and booleans (turning `42` into `"42"`); a client
//! that sends the wrong type must get a 400 instead, so request DTOs use [`Text`]. A
//! `rate_limit_period` is a number of seconds or a unit name, modelled by [`Period`] with an
//! honest `oneOf` schema.

use std::borrow::Cow;

use poem_openapi::registry::{MetaSchema, MetaSchemaRef};
use poem_openapi::types::{ParseError, ParseFromJSON, ParseResult, ToJSON, Type};
use serde_json::Value;

use crate::domain::RatePeriod;
use crate::error::Result;

/// A JSON string, and only a string.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Text(pub String);

impl Text {
    /// The string.
    pub fn into_inner(self) -> String {
        self.0
    }

    /// As a slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Type for Text {
    const IS_REQUIRED: bool = true;
    type RawValueType = String;
    type RawElementValueType = String;

    fn name() -> Cow<'static, str> {
        "string".into()
    }

    fn schema_ref() -> MetaSchemaRef {
        MetaSchemaRef::Inline(Box::new(MetaSchema::new("string")))
    }

    fn as_raw_value(&self) -> Option<&Self::RawValueType> {
        Some(&self.0)
    }

    fn raw_element_iter<'a>(
        &'a self,
    ) -> Box<dyn Iterator<Item = &'a Self::RawElementValueType> + 'a> {
        Box::new(std::iter::once(&self.0))
    }
}

impl ParseFromJSON for Text {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        match value {
            Some(Value::String(s)) => Ok(Text(s)),
            Some(other) => Err(ParseError::expected_type(other)),
            None => Err(ParseError::expected_input()),
        }
    }
}

impl ToJSON for Text {
    fn to_json(&self) -> Option<Value> {
        Some(Value::String(self.0.clone()))
    }
}

/// `rate_limit_period` as sent: whole seconds, or `"second"`, `"minute"`, `"hour"`, `"day"`
/// (a string of digits is taken as seconds too).
#[derive(Debug, Clone, PartialEq)]
pub enum Period {
    /// A number of seconds.
    Seconds(i64),
    /// A unit name (or digits).
    Name(String),
}

impl Period {
    /// The domain period.
    pub fn parse(&self) -> Result<RatePeriod> {
        match self {
            Period::Seconds(s) => RatePeriod::from_seconds(*s),
            Period::Name(n) => match n.trim().parse::<i64>() {
                Ok(secs) => RatePeriod::from_seconds(secs),
                Err(_) => RatePeriod::from_name(n),
            },
        }
    }
}

impl Type for Period {
    const IS_REQUIRED: bool = true;
    type RawValueType = Self;
    type RawElementValueType = Self;

    fn name() -> Cow<'static, str> {
        "rate_limit_period".into()
    }

    fn schema_ref() -> MetaSchemaRef {
        let mut names = MetaSchema::new("string");
        names.enum_items = ["second", "minute", "hour", "day"]
            .into_iter()
            .map(|s| Value::String(s.into()))
            .collect();
        let mut seconds = MetaSchema::new("integer");
        seconds.format = Some("int64");
        seconds.minimum = Some(1.0);
        MetaSchemaRef::Inline(Box::new(MetaSchema {
            description: Some(
                "Window length: whole seconds, or \"second\", \"minute\", \"hour\", \"day\".",
            ),
            one_of: vec![
                MetaSchemaRef::Inline(Box::new(seconds)),
                MetaSchemaRef::Inline(Box::new(names)),
            ],
            ..MetaSchema::ANY
        }))
    }

    fn as_raw_value(&self) -> Option<&Self::RawValueType> {
        Some(self)
    }

    fn raw_element_iter<'a>(
        &'a self,
    ) -> Box<dyn Iterator<Item = &'a Self::RawElementValueType> + 'a> {
        Box::new(std::iter::once(self))
    }
}

impl ParseFromJSON for Period {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        match value {
            Some(Value::Number(n)) => n.as_i64().map(Period::Seconds).ok_or_else(|| {
                ParseError::custom("rate_limit_period must be a whole number of seconds")
            }),
            Some(Value::String(s)) => Ok(Period::Name(s)),
            Some(other) => Err(ParseError::expected_type(other)),
            None => Err(ParseError::expected_input()),
        }
    }
}

impl ToJSON for Period {
    fn to_json(&self) -> Option<Value> {
        Some(match self {
            Period::Seconds(s) => Value::from(*s),
            Period::Name(n) => Value::String(n.clone()),
        })
    }
}
