//! `#[derive(DomainEvent)]`.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;

use proc_macro2::{Span, TokenStream};
use quote::{ToTokens, format_ident, quote};
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{
    Attribute, Data, DeriveInput, Fields, Ident, LitInt, LitStr, Meta, Path, Token, Type, Variant,
};

use crate::Errors;

/// What `#[event(...)]` says about one variant.
#[derive(Default)]
struct EventAttrs {
    name: Option<LitStr>,
    version: Option<(u32, LitInt)>,
    /// `vK = path`, keyed by K.
    upcast: BTreeMap<u32, (Ident, Path)>,
    /// The `upcast` keyword, for errors about the list as a whole.
    upcast_kw: Option<Path>,
    /// `tag = <expr>`: tags computed from the variant's fields.
    tags: Vec<syn::Expr>,
}

/// One variant, checked and ready to generate code for.
struct EventVariant<'a> {
    variant: &'a Variant,
    name: String,
    /// Where to point errors about the name.
    name_span: Span,
    version: u32,
    /// The upcasters in order: `chain[i]` upgrades `i + 1` to `i + 2`.
    chain: Vec<Path>,
    shape: Shape<'a>,
    /// `#[tag]` fields: the field (its name, or `None` for a newtype's
    /// inner value) and the tag's prefix.
    field_tags: Vec<(Option<&'a Ident>, String)>,
    /// `#[event(tag = <expr>)]`.
    tag_exprs: Vec<syn::Expr>,
}

enum Shape<'a> {
    /// `V`, `V {}` or `V()`: payload `{}`.
    Unit,
    /// `V(Inner)`: payload is `Inner` as-is.
    Newtype(&'a Type),
    /// `V { a: A, .. }`: payload is the object of the fields.
    Named,
}

pub fn expand(input: &DeriveInput) -> syn::Result<TokenStream> {
    let mut errors = Errors::default();
    let ident = &input.ident;

    let data = match &input.data {
        Data::Enum(data) => data,
        Data::Struct(_) => {
            return Err(syn::Error::new_spanned(
                ident,
                format!(
                    "`#[derive(DomainEvent)]` works on enums, and `{ident}` is a struct: \
                     make it an enum with one variant per event, e.g. \
                     `enum {ident}Event {{ {ident} {{ .. }} }}`"
                ),
            ));
        }
        Data::Union(_) => {
            return Err(syn::Error::new_spanned(
                ident,
                format!(
                    "`#[derive(DomainEvent)]` works on enums, and `{ident}` is a union: \
                     make it an enum with one variant per event"
                ),
            ));
        }
    };

    if !input.generics.params.is_empty() || input.generics.where_clause.is_some() {
        errors.push(syn::Error::new_spanned(
            &input.generics,
            format!(
                "`#[derive(DomainEvent)]` does not support generic enums: events are stored and \
                 read back by type name, so `{ident}` must be a concrete type; \
                 remove its generic parameters"
            ),
        ));
    }

    for attr in input.attrs.iter().filter(|a| a.path().is_ident("event")) {
        errors.push(syn::Error::new_spanned(
            attr,
            "`#[event(...)]` goes on the variants of the enum, not on the enum itself: \
             move it above the variant it describes",
        ));
    }

    let mut variants = Vec::new();
    for variant in &data.variants {
        if let Some(v) = check_variant(variant, &mut errors) {
            variants.push(v);
        }
    }

    // Type names must be unique across the enum.
    let mut seen: BTreeMap<&str, &Ident> = BTreeMap::new();
    for v in &variants {
        if let Some(first) = seen.get(v.name.as_str()) {
            errors.push(syn::Error::new(
                v.name_span,
                format!(
                    "event type name \"{}\" is used by both `{}` and `{}`: each event needs its \
                     own stable type name; give one of them `#[event(name = \"...\")]`",
                    v.name, first, v.variant.ident
                ),
            ));
        } else {
            seen.insert(&v.name, &v.variant.ident);
        }
    }

    errors.finish()?;
    Ok(generate(ident, &variants))
}

fn check_variant<'a>(variant: &'a Variant, errors: &mut Errors) -> Option<EventVariant<'a>> {
    let attrs = parse_event_attrs(&variant.attrs, errors);
    let vident = &variant.ident;

    let mut field_tags = Vec::new();
    for field in &variant.fields {
        for attr in field.attrs.iter().filter(|a| a.path().is_ident("event")) {
            errors.push(syn::Error::new_spanned(
                attr,
                "`#[event(...)]` goes on the variant, not on its fields",
            ));
        }
        for attr in field.attrs.iter().filter(|a| a.path().is_ident("tag")) {
            let prefix = match &attr.meta {
                Meta::Path(_) => field.ident.as_ref().map(unraw),
                Meta::List(_) => match attr.parse_args::<LitStr>() {
                    Ok(lit) if !lit.value().is_empty() => Some(lit.value()),
                    _ => {
                        errors.push(syn::Error::new_spanned(
                            attr,
                            "expected `#[tag]` (the tag is `<field name>:<value>`) or \
                             `#[tag(\"prefix\")]` (`<prefix>:<value>`)",
                        ));
                        continue;
                    }
                },
                Meta::NameValue(_) => {
                    errors.push(syn::Error::new_spanned(
                        attr,
                        "expected `#[tag]` or `#[tag(\"prefix\")]`",
                    ));
                    continue;
                }
            };
            match prefix {
                Some(prefix) => field_tags.push((field.ident.as_ref(), prefix)),
                None => errors.push(syn::Error::new_spanned(
                    attr,
                    "the field has no name to prefix its tag with: write `#[tag(\"prefix\")]`",
                )),
            }
        }
    }

    let shape = match &variant.fields {
        Fields::Unit => Shape::Unit,
        Fields::Named(named) if named.named.is_empty() => Shape::Unit,
        Fields::Named(_) => Shape::Named,
        Fields::Unnamed(unnamed) => match unnamed.unnamed.len() {
            0 => Shape::Unit,
            1 => {
                let field = &unnamed.unnamed[0];
                if let Some(attr) = field.attrs.iter().find(|a| a.path().is_ident("serde")) {
                    errors.push(syn::Error::new_spanned(
                        attr,
                        format!(
                            "`#[serde(...)]` on the field of newtype event `{vident}` is not \
                             supported: its payload is the inner type serialized as-is, so put \
                             the attribute on the inner type, or give the variant named fields"
                        ),
                    ));
                }
                Shape::Newtype(&field.ty)
            }
            n => {
                errors.push(syn::Error::new_spanned(
                    &variant.fields,
                    format!(
                        "event `{vident}` is a tuple variant with {n} fields, but an event's \
                         payload is a JSON object: give the fields names \
                         (`{vident} {{ a: .., b: .. }}`) or wrap them in one struct \
                         (`{vident}(Payload)`)"
                    ),
                ));
                return None;
            }
        },
    };

    let (name, name_span) = match &attrs.name {
        Some(lit) => (lit.value(), lit.span()),
        None => (unraw(vident), vident.span()),
    };
    if name.is_empty() {
        errors.push(syn::Error::new(
            name_span,
            format!("event `{vident}` has an empty type name: give it a non-empty `name`"),
        ));
    }

    let version = attrs.version.as_ref().map_or(1, |(v, _)| *v);
    if version == 0 {
        // Already reported while parsing; nothing more to check.
        return None;
    }

    let mut ok = true;
    // Upcasters at or above the current version can never run.
    for (&from, (key, _)) in &attrs.upcast {
        if from >= version {
            ok = false;
            errors.push(syn::Error::new_spanned(
                key,
                format!(
                    "`upcast(v{from} = ...)` upgrades v{from} to v{next}, but event `{name}` is \
                     at version {version}, so it would never run: remove it, or raise the \
                     event to `version = {next}`",
                    next = from + 1
                ),
            ));
        }
    }
    // Every version below the current one needs its step.
    let mut chain = Vec::new();
    let mut missing = Vec::new();
    for from in 1..version {
        match attrs.upcast.get(&from) {
            Some((_, path)) => chain.push(path.clone()),
            None => missing.push(from),
        }
    }
    if !missing.is_empty() {
        ok = false;
        let span = match (&attrs.upcast_kw, &attrs.version) {
            (Some(kw), _) => kw.span(),
            (None, Some((_, lit))) => lit.span(),
            (None, None) => vident.span(),
        };
        let froms: Vec<String> = missing.iter().map(|from| format!("v{from}")).collect();
        let steps: Vec<String> = missing
            .iter()
            .map(|from| format!("v{from} = path::to::fn_v{from}_to_v{}", from + 1))
            .collect();
        let (upcasters, froms) = match froms.split_last() {
            Some((last, rest)) if !rest.is_empty() => {
                ("upcasters", format!("{} and {last}", rest.join(", ")))
            }
            _ => ("upcaster", froms.join("")),
        };
        let fix = if attrs.upcast_kw.is_some() {
            format!("add `{}` to its `upcast(...)`", steps.join(", "))
        } else {
            format!("add `upcast({})`", steps.join(", "))
        };
        errors.push(syn::Error::new(
            span,
            format!(
                "event `{name}` is at version {version} but has no {upcasters} from {froms}; {fix}"
            ),
        ));
    }

    ok.then_some(EventVariant {
        variant,
        name,
        name_span,
        version,
        chain,
        shape,
        field_tags,
        tag_exprs: attrs.tags,
    })
}

fn parse_event_attrs(attrs: &[Attribute], errors: &mut Errors) -> EventAttrs {
    let mut out = EventAttrs::default();
    for attr in attrs.iter().filter(|a| a.path().is_ident("event")) {
        if let Meta::Path(_) = attr.meta {
            errors.push(syn::Error::new_spanned(
                attr,
                "`#[event]` needs arguments: `#[event(name = \"...\", version = N, \
                 upcast(v1 = path, ...))]`",
            ));
            continue;
        }
        let result = attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("name") {
                let lit: LitStr = meta.value()?.parse()?;
                if out.name.is_some() {
                    errors.push(meta.error("duplicate `name`: an event has one type name"));
                } else {
                    out.name = Some(lit);
                }
            } else if meta.path.is_ident("version") {
                let lit: LitInt = meta.value()?.parse()?;
                let version: u32 = lit.base10_parse()?;
                if version == 0 {
                    errors.push(syn::Error::new_spanned(
                        &lit,
                        "schema versions start at 1: use `version = 1` (the default) or higher",
                    ));
                }
                if out.version.is_some() {
                    errors
                        .push(meta.error("duplicate `version`: an event has one current version"));
                } else {
                    out.version = Some((version, lit));
                }
            } else if meta.path.is_ident("upcast") {
                if out.upcast_kw.is_none() {
                    out.upcast_kw = Some(meta.path.clone());
                }
                meta.parse_nested_meta(|step| {
                    let key = step.path.get_ident().cloned();
                    let from = key.as_ref().and_then(|k| {
                        k.to_string()
                            .strip_prefix('v')
                            .and_then(|n| n.parse::<u32>().ok())
                            .filter(|n| *n >= 1)
                    });
                    let (Some(key), Some(from)) = (key, from) else {
                        return Err(step.error(
                            "expected `vN = path::to::upcaster` inside `upcast(...)`, \
                             with N >= 1 the version the upcaster upgrades from \
                             (e.g. `upcast(v1 = v1_to_v2)`)",
                        ));
                    };
                    let path: Path = step.value()?.parse()?;
                    match out.upcast.entry(from) {
                        Entry::Vacant(slot) => {
                            slot.insert((key, path));
                        }
                        Entry::Occupied(_) => errors.push(syn::Error::new_spanned(
                            &key,
                            format!("duplicate upcaster `v{from}`: there is one step per version"),
                        )),
                    }
                    Ok(())
                })?;
            } else if meta.path.is_ident("tag") {
                let expr: syn::Expr = meta.value()?.parse()?;
                out.tags.push(expr);
            } else {
                let key = meta.path.to_token_stream().to_string().replace(' ', "");
                return Err(meta.error(format!(
                    "unknown `event` attribute `{key}`: expected `name = \"...\"`, \
                     `version = N`, `upcast(v1 = path, ...)` or `tag = <expression>`"
                )));
            }
            Ok(())
        });
        if let Err(e) = result {
            errors.push(e);
        }
    }
    out
}

/// The variant's own `#[serde(rename_all = ...)]`, which applies to its fields.
fn variant_serde_container_attrs(variant: &Variant) -> Vec<TokenStream> {
    let mut out = Vec::new();
    for attr in variant.attrs.iter().filter(|a| a.path().is_ident("serde")) {
        // Malformed serde attributes are serde's to report (or ignore).
        let Ok(metas) = attr.parse_args_with(Punctuated::<Meta, Token![,]>::parse_terminated)
        else {
            continue;
        };
        for meta in metas {
            if meta.path().is_ident("rename_all") {
                out.push(quote!(#[serde(#meta)]));
            }
        }
    }
    out
}

fn generate(ident: &Ident, variants: &[EventVariant<'_>]) -> TokenStream {
    let annals = quote!(::annals);
    let serde = quote!(::annals::__private::serde);
    let json = quote!(::annals::__private::serde_json);
    let serde_crate = LitStr::new("::annals::__private::serde", Span::call_site());

    let mut shadows = TokenStream::new();
    let mut types = Vec::new();
    let mut type_arms = Vec::new();
    let mut version_arms = Vec::new();
    let mut tag_arms = Vec::new();
    let mut encode_arms = Vec::new();
    let mut decode_arms = Vec::new();
    let mut needs_unit = false;
    let mut names = Vec::new();

    for v in variants {
        let vident = &v.variant.ident;
        let name = LitStr::new(&v.name, v.name_span);
        let version = v.version;
        let constant = Ident::new(&screaming_snake(&unraw(vident)), vident.span());
        let doc = format!(
            "The stored type name of [`{}`](Self::{}) events: a checked name for filters and matches.",
            unraw(vident),
            unraw(vident)
        );
        names.push(quote! {
            #[doc = #doc]
            pub const #constant: &'static str = #name;
        });
        let pattern = match &v.variant.fields {
            Fields::Named(_) => quote!(Self::#vident { .. }),
            Fields::Unnamed(_) => quote!(Self::#vident(..)),
            Fields::Unit => quote!(Self::#vident),
        };

        types.push(quote!(#annals::EventType { name: #name, version: #version }));
        type_arms.push(quote!(#pattern => #name));
        version_arms.push(quote!(#pattern => #version));
        if !v.field_tags.is_empty() || !v.tag_exprs.is_empty() {
            // Bind every field by name, so tag expressions can use any.
            let binding = match &v.variant.fields {
                Fields::Named(named) => {
                    let names = named.named.iter().filter_map(|f| f.ident.as_ref());
                    quote!(Self::#vident { #(#names),* })
                }
                Fields::Unnamed(_) => quote!(Self::#vident(inner)),
                Fields::Unit => quote!(Self::#vident),
            };
            let from_fields = v.field_tags.iter().map(|(field, prefix)| match field {
                Some(field) => quote!(::std::format!("{}:{}", #prefix, #field)),
                None => quote!(::std::format!("{}:{}", #prefix, inner)),
            });
            let from_exprs = v
                .tag_exprs
                .iter()
                .map(|expr| quote!(::std::string::ToString::to_string(&(#expr))));
            tag_arms.push(quote! {
                #[allow(unused_variables)]
                #binding => ::std::vec![#(#from_fields,)* #(#from_exprs,)*],
            });
        }

        let map_encode = quote! {
            .map_err(|source| #annals::EventError::Encode {
                event_type: ::std::borrow::ToOwned::to_owned(#name),
                source,
            })
        };

        // `decode_current`: any JSON deserializer of the payload at the
        // current version (its text, or the tree an upcast left) ->
        // `Result<Self, serde_json::Error>`. A `fn` item, so it cannot name
        // `Self`: the derive refuses generic enums, so `#ident` is the type.
        let decode_current = match &v.shape {
            Shape::Unit => {
                needs_unit = true;
                let construct = match &v.variant.fields {
                    Fields::Named(_) => quote!(#ident::#vident {}),
                    Fields::Unnamed(_) => quote!(#ident::#vident()),
                    Fields::Unit => quote!(#ident::#vident),
                };
                encode_arms.push(quote! {
                    #pattern => #json::value::to_raw_value(&#json::Map::new())
                        .map(#annals::Payload::from) #map_encode,
                });
                quote! {
                    // `null` or `{}`.
                    <::std::option::Option<__AnnalsUnitPayload> as #serde::Deserialize>::deserialize(payload)?;
                    ::std::result::Result::Ok(#construct)
                }
            }
            Shape::Newtype(ty) => {
                encode_arms.push(quote! {
                    Self::#vident(inner) => #json::value::to_raw_value(inner)
                        .map(#annals::Payload::from) #map_encode,
                });
                quote! {
                    <#ty as #serde::Deserialize>::deserialize(payload).map(#ident::#vident)
                }
            }
            Shape::Named => {
                let enc = format_ident!("__AnnalsEncode{}", vident);
                let dec = format_ident!("__AnnalsDecode{}", vident);
                let container = variant_serde_container_attrs(v.variant);
                let fields: Vec<_> = v.variant.fields.iter().collect();
                let names: Vec<_> = fields.iter().filter_map(|f| f.ident.as_ref()).collect();
                let tys: Vec<_> = fields.iter().map(|f| &f.ty).collect();
                let serde_attrs: Vec<Vec<&Attribute>> = fields
                    .iter()
                    .map(|f| {
                        f.attrs
                            .iter()
                            .filter(|a| a.path().is_ident("serde"))
                            .collect()
                    })
                    .collect();
                shadows.extend(quote! {
                    #[derive(#serde::Serialize)]
                    #[serde(crate = #serde_crate)]
                    #(#container)*
                    #[allow(non_camel_case_types)]
                    struct #enc<'__annals> {
                        #( #(#serde_attrs)* #names: &'__annals #tys, )*
                    }

                    #[derive(#serde::Deserialize)]
                    #[serde(crate = #serde_crate)]
                    #(#container)*
                    #[allow(non_camel_case_types)]
                    struct #dec {
                        #( #(#serde_attrs)* #names: #tys, )*
                    }
                });
                encode_arms.push(quote! {
                    Self::#vident { #(#names),* } => #json::value::to_raw_value(&#enc { #(#names),* })
                        .map(#annals::Payload::from) #map_encode,
                });
                quote! {
                    let #dec { #(#names),* } =
                        <#dec as #serde::Deserialize>::deserialize(payload)?;
                    ::std::result::Result::Ok(#ident::#vident { #(#names),* })
                }
            }
        };

        let chain = v.chain.iter();
        let chain_len = v.chain.len();
        decode_arms.push(quote! {
            #name => {
                fn decode_current<'de, D>(payload: D) -> ::std::result::Result<#ident, #json::Error>
                where
                    D: #serde::Deserializer<'de, Error = #json::Error>,
                {
                    #decode_current
                }
                let decoded = if schema_version == #version {
                    // Straight from the text: no JSON tree in between.
                    let mut text = #json::Deserializer::from_str(payload.json());
                    decode_current(&mut text).and_then(|event| text.end().map(|()| event))
                } else {
                    let tree = payload.to_value().map_err(|source| #annals::EventError::Decode {
                        event_type: ::std::borrow::ToOwned::to_owned(#name),
                        schema_version,
                        source,
                    })?;
                    // A local, not a `const`, so that `Self::...` upcaster paths resolve.
                    let chain: [#annals::Upcaster; #chain_len] = [#(#chain),*];
                    let upcast = #annals::event::upcast(
                        #name, schema_version, #version, &chain, tree,
                    )?;
                    decode_current(upcast)
                };
                decoded.map_err(|source| #annals::EventError::Decode {
                    event_type: ::std::borrow::ToOwned::to_owned(#name),
                    schema_version: #version,
                    source,
                })
            }
        });
    }

    if needs_unit {
        shadows.extend(quote! {
            #[derive(#serde::Deserialize)]
            #[serde(crate = #serde_crate)]
            struct __AnnalsUnitPayload {}
        });
    }

    // `match *self {}` is the only form that compiles for an enum without variants.
    let (type_body, version_body, encode_body) = if variants.is_empty() {
        (
            quote!(match *self {}),
            quote!(match *self {}),
            quote!(match *self {}),
        )
    } else {
        (
            quote!(match self { #(#type_arms,)* }),
            quote!(match self { #(#version_arms,)* }),
            quote!(match self { #(#encode_arms)* }),
        )
    };

    let unknown = quote! {
        _ => ::std::result::Result::Err(#annals::EventError::UnknownType {
            event_type: ::std::borrow::ToOwned::to_owned(event_type),
            schema_version,
        }),
    };

    quote! {
        #[doc(hidden)]
        #[allow(clippy::all, clippy::pedantic, clippy::nursery)]
        const _: () = {
            #shadows

            #[automatically_derived]
            impl #ident {
                #(#names)*
            }

            #[automatically_derived]
            impl #annals::DomainEvent for #ident {
                const TYPES: &'static [#annals::EventType] = &[#(#types),*];

                fn tags(&self) -> ::std::vec::Vec<::std::string::String> {
                    #[allow(unreachable_patterns)]
                    match self {
                        #(#tag_arms)*
                        _ => ::std::vec::Vec::new(),
                    }
                }

                fn event_type(&self) -> &'static str {
                    #type_body
                }

                fn schema_version(&self) -> u32 {
                    #version_body
                }

                fn encode(&self) -> ::std::result::Result<#annals::Payload, #annals::EventError> {
                    #encode_body
                }

                fn decode(
                    event_type: &str,
                    schema_version: u32,
                    payload: &#annals::Payload,
                ) -> ::std::result::Result<Self, #annals::EventError> {
                    match event_type {
                        #(#decode_arms)*
                        #unknown
                    }
                }
            }
        };
    }
}

/// `SeatsReserved` → `SEATS_RESERVED`, the name of a variant's type-name constant.
fn screaming_snake(name: &str) -> String {
    crate::aggregate::snake_case(name).to_uppercase()
}

/// An identifier's name without its `r#`.
pub(crate) fn unraw(ident: &Ident) -> String {
    let s = ident.to_string();
    match s.strip_prefix("r#") {
        Some(rest) => rest.to_owned(),
        None => s,
    }
}
