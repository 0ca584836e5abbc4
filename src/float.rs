//! Float formatting byte-for-byte as prometheus_client's `floatToGoString`.

/// Append `v` as prometheus_client writes it: Python's `repr`, `+Inf`/`-Inf`/`NaN`, and Go-style
/// exponents for positive numbers of seven or more integer digits.
pub fn write_go_float(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
        return;
    }
    if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
        return;
    }
    let start = out.len();
    write_py_repr(out, v);
    if v > 0.0 {
        let repr = &out[start..];
        if let Some(dot) = repr.find('.') {
            if dot > 6 {
                let digits: String = repr[..dot].chars().chain(repr[dot + 1..].chars()).collect();
                let mut mantissa = format!("{}.{}", &digits[..1], &digits[1..]);
                while mantissa.ends_with('0') || mantissa.ends_with('.') {
                    mantissa.pop();
                }
                out.truncate(start);
                out.push_str(&mantissa);
                out.push_str(&format!("e+{:02}", dot - 1));
            }
        }
    }
}

/// Append `v` as Python's `repr(float)` does: shortest round-trip digits, fixed notation for
/// decimal exponents in [-4, 16), scientific otherwise.
pub fn write_py_repr(out: &mut String, v: f64) {
    if v == 0.0 {
        out.push_str(if v.is_sign_negative() { "-0.0" } else { "0.0" });
        return;
    }
    // `{:e}` gives the shortest digits that round-trip, e.g. "-1.2345e3".
    let mut sci = format!("{v:e}");
    let sig = sci.bytes().take_while(|c| *c != b'e').filter(u8::is_ascii_digit).count();
    if sig >= 16 {
        // With 16 or 17 digits two shortest candidates can tie; Python takes the correctly
        // rounded one (half-even on the exact binary value), as exact formatting does.
        let exact = format!("{:.*e}", sig - 1, v);
        if exact.parse::<f64>().is_ok_and(|x| x == v) {
            sci = exact;
        }
    }
    let (mant, exp) = match sci.split_once('e') {
        Some(parts) => parts,
        None => (sci.as_str(), "0"),
    };
    let exp: i32 = exp.parse().unwrap_or(0);
    let (neg, mant) = match mant.strip_prefix('-') {
        Some(m) => (true, m),
        None => (false, mant),
    };
    let digits: String = mant.chars().filter(|c| *c != '.').collect();
    if neg {
        out.push('-');
    }
    if (-4..16).contains(&exp) {
        if exp < 0 {
            out.push_str("0.");
            for _ in 0..(-exp - 1) {
                out.push('0');
            }
            out.push_str(&digits);
        } else {
            let int_len = exp as usize + 1;
            if digits.len() <= int_len {
                out.push_str(&digits);
                for _ in digits.len()..int_len {
                    out.push('0');
                }
                out.push_str(".0");
            } else {
                out.push_str(&digits[..int_len]);
                out.push('.');
                out.push_str(&digits[int_len..]);
            }
        }
    } else {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        out.push('e');
        out.push(if exp < 0 { '-' } else { '+' });
        out.push_str(&format!("{:02}", exp.abs()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn go(v: f64) -> String {
        let mut s = String::new();
        write_go_float(&mut s, v);
        s
    }

    fn py(v: f64) -> String {
        let mut s = String::new();
        write_py_repr(&mut s, v);
        s
    }

    #[test]
    fn matches_python_repr() {
        let cases = [
            (1.0, "1.0"),
            (0.1, "0.1"),
            (0.005, "0.005"),
            (1e-5, "1e-05"),
            (0.0001, "0.0001"),
            (1.5e-7, "1.5e-07"),
            (123.456, "123.456"),
            (1e16, "1e+16"),
            (1.5e16, "1.5e+16"),
            (9999999999999998.0, "9999999999999998.0"),
            (-2.5, "-2.5"),
            (-0.0, "-0.0"),
            (1e300, "1e+300"),
            (5e-324, "5e-324"),
            (562949953421312.2, "562949953421312.2"),
        ];
        for (v, want) in cases {
            assert_eq!(py(v), want, "{v}");
        }
    }

    #[test]
    fn matches_float_to_go_string() {
        assert_eq!(go(f64::INFINITY), "+Inf");
        assert_eq!(go(f64::NEG_INFINITY), "-Inf");
        assert_eq!(go(f64::NAN), "NaN");
        assert_eq!(go(1000000.0), "1e+06");
        assert_eq!(go(999999.0), "999999.0");
        assert_eq!(go(1234567.5), "1.2345675e+06");
        assert_eq!(go(1764276000.125), "1.764276000125e+09");
        assert_eq!(go(-1234567.0), "-1234567.0");
        assert_eq!(go(2.5), "2.5");
    }
}
