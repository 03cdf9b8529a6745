//! `#[derive(AggregateType)]`.

use proc_macro2::{Span, TokenStream};
use quote::{ToTokens, quote, quote_spanned};
use syn::{Data, DeriveInput, LitInt, LitStr, Meta, Path};

use crate::Errors;
use crate::domain_event::unraw;

#[derive(Default)]
struct AggregateAttrs {
    name: Option<LitStr>,
    /// The `snapshot` keyword, so that missing serde impls are reported there.
    snapshot: Option<Path>,
    snapshot_version: Option<(u32, LitInt)>,
}

pub fn expand(input: &DeriveInput) -> syn::Result<TokenStream> {
    let ident = &input.ident;
    if let Data::Union(_) = input.data {
        return Err(syn::Error::new_spanned(
            ident,
            format!(
                "`#[derive(AggregateType)]` works on structs and enums, and `{ident}` is a union: \
                 make it a struct"
            ),
        ));
    }

    let mut errors = Errors::default();
    let attrs = parse_attrs(input, &mut errors);

    let name = match &attrs.name {
        Some(lit) => {
            if lit.value().is_empty() {
                errors.push(syn::Error::new_spanned(
                    lit,
                    "an aggregate name must not be empty: it prefixes every stream id \
                     (`<name>-<id>`)",
                ));
            }
            lit.clone()
        }
        None => {
            // No default from the Rust type name: renaming the type would
            // silently move every stream of the aggregate.
            let suggestion = snake_case(&unraw(ident));
            errors.push(syn::Error::new_spanned(
                ident,
                format!(
                    "name the aggregate `{ident}`: `#[aggregate(name = \"{suggestion}\")]`. \
                     The name prefixes every stream id (`<name>-<id>`), so it is stored \
                     data and must not follow renames of the type"
                ),
            ));
            LitStr::new(&suggestion, ident.span())
        }
    };

    if let (None, Some((_, lit))) = (&attrs.snapshot, &attrs.snapshot_version) {
        errors.push(syn::Error::new_spanned(
            lit,
            "`snapshot_version` has no effect without `snapshot`: \
             write `#[aggregate(snapshot, snapshot_version = N)]`",
        ));
    }
    errors.finish()?;

    let annals = quote!(::annals);
    let json = quote!(::annals::__private::serde_json);
    let mut generics = input.generics.clone();
    if attrs.snapshot.is_some() && !generics.params.is_empty() {
        generics
            .make_where_clause()
            .predicates
            .push(syn::parse_quote!(
                Self: ::annals::__private::serde::Serialize
                    + ::annals::__private::serde::de::DeserializeOwned
            ));
    }
    let (impl_generics, ty_generics, where_clause) = generics.split_for_impl();

    let snapshot_version = attrs
        .snapshot_version
        .as_ref()
        .map(|(v, _)| quote!(const SNAPSHOT_VERSION: u32 = #v;));
    let snapshot = attrs.snapshot.as_ref().map(|kw| {
        // Spanned at `snapshot`, so a missing `Serialize`/`Deserialize` impl is reported there.
        let span = kw_span(kw);
        let to_value = quote_spanned!(span=>
            <Self as ::annals::__private::serde::Serialize>::serialize(
                self,
                #json::value::Serializer,
            )
        );
        let from_value = quote_spanned!(span=>
            <Self as ::annals::__private::serde::Deserialize>::deserialize(state)
        );
        quote! {
            fn snapshot(&self) -> ::std::option::Option<#json::Value> {
                ::std::result::Result::ok(#to_value)
            }

            fn restore(state: &#json::Value) -> ::std::option::Option<Self> {
                ::std::result::Result::ok(#from_value)
            }
        }
    });

    Ok(quote! {
        #[automatically_derived]
        impl #impl_generics #annals::AggregateType for #ident #ty_generics #where_clause {
            const NAME: &'static str = #name;
            #snapshot_version
            #snapshot
        }
    })
}

fn kw_span(path: &Path) -> Span {
    path.segments
        .first()
        .map_or_else(Span::call_site, |s| s.ident.span())
}

fn parse_attrs(input: &DeriveInput, errors: &mut Errors) -> AggregateAttrs {
    let mut out = AggregateAttrs::default();
    for attr in input
        .attrs
        .iter()
        .filter(|a| a.path().is_ident("aggregate"))
    {
        if let Meta::Path(_) = attr.meta {
            errors.push(syn::Error::new_spanned(
                attr,
                "`#[aggregate]` needs arguments: `#[aggregate(name = \"...\", snapshot, \
                 snapshot_version = N)]`",
            ));
            continue;
        }
        let result = attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("name") {
                let lit: LitStr = meta.value()?.parse()?;
                if out.name.is_some() {
                    errors.push(meta.error("duplicate `name`: an aggregate has one name"));
                } else {
                    out.name = Some(lit);
                }
            } else if meta.path.is_ident("snapshot") {
                if out.snapshot.is_some() {
                    errors.push(meta.error("duplicate `snapshot`"));
                } else {
                    out.snapshot = Some(meta.path.clone());
                }
            } else if meta.path.is_ident("snapshot_version") {
                let lit: LitInt = meta.value()?.parse()?;
                let version: u32 = lit.base10_parse()?;
                if version == 0 {
                    errors.push(syn::Error::new_spanned(
                        &lit,
                        "snapshot versions start at 1: use `snapshot_version = 1` (the default) \
                         or higher",
                    ));
                }
                if out.snapshot_version.is_some() {
                    errors.push(meta.error("duplicate `snapshot_version`"));
                } else {
                    out.snapshot_version = Some((version, lit));
                }
            } else {
                let key = meta.path.to_token_stream().to_string().replace(' ', "");
                return Err(meta.error(format!(
                    "unknown `aggregate` attribute `{key}`: expected `name = \"...\"`, \
                     `snapshot` or `snapshot_version = N`"
                )));
            }
            Ok(())
        });
        if let Err(e) = result {
            errors.push(e);
        }
    }
    for field_attr in fields_attrs(input) {
        errors.push(syn::Error::new_spanned(
            field_attr,
            "`#[aggregate(...)]` goes on the type, not on its fields or variants",
        ));
    }
    out
}

/// `#[aggregate]` attributes misplaced on fields or variants.
fn fields_attrs(input: &DeriveInput) -> Vec<&syn::Attribute> {
    let is_aggregate = |a: &&syn::Attribute| a.path().is_ident("aggregate");
    match &input.data {
        Data::Struct(s) => s
            .fields
            .iter()
            .flat_map(|f| f.attrs.iter().filter(is_aggregate))
            .collect(),
        Data::Enum(e) => e
            .variants
            .iter()
            .flat_map(|v| {
                v.attrs.iter().filter(is_aggregate).chain(
                    v.fields
                        .iter()
                        .flat_map(|f| f.attrs.iter().filter(is_aggregate)),
                )
            })
            .collect(),
        Data::Union(_) => Vec::new(),
    }
}

/// `FlightBooking` → `flight_booking`, `HTTPServer` → `http_server`, `V2Flight` → `v2_flight`.
pub(crate) fn snake_case(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    let mut out = String::with_capacity(name.len() + 4);
    for (i, &c) in chars.iter().enumerate() {
        if c.is_uppercase() {
            let prev = i.checked_sub(1).map(|p| chars[p]);
            let next = chars.get(i + 1).copied();
            let boundary = match prev {
                None | Some('_') => false,
                Some(p) if p.is_lowercase() || p.is_ascii_digit() => true,
                Some(p) if p.is_uppercase() => next.is_some_and(char::is_lowercase),
                Some(_) => false,
            };
            if boundary {
                out.push('_');
            }
            out.extend(c.to_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::snake_case;

    #[test]
    fn snake_cases_type_names() {
        assert_eq!(snake_case("Flight"), "flight");
        assert_eq!(snake_case("FlightBooking"), "flight_booking");
        assert_eq!(snake_case("HTTPServer"), "http_server");
        assert_eq!(snake_case("V2Flight"), "v2_flight");
        assert_eq!(snake_case("Seat2B"), "seat2_b");
        assert_eq!(snake_case("already_snake"), "already_snake");
        assert_eq!(snake_case("A"), "a");
    }
}
