//! The C signatures of the CUDA kernels in `cuda/kernels.cu`, one constant
//! per kernel. The CUDA launches check the arguments they pass against
//! these before launching (`cuda::launch!`), and a test that needs no GPU
//! checks these against the source, so an argument list and its kernel
//! cannot drift apart unnoticed.

/// A kernel parameter's C type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CType {
    /// `const float *`
    FloatIn,
    /// `float *`
    FloatOut,
    /// `const unsigned int *`
    UintIn,
    /// `unsigned int *`
    UintOut,
    /// `long long`
    LongLong,
    /// `int`
    Int,
    /// `float`
    Float,
    /// `double`
    Double,
}

impl CType {
    /// As written in `kernels.cu`, without the parameter's name.
    #[cfg(test)]
    fn spelling(self) -> &'static str {
        match self {
            CType::FloatIn => "const float *",
            CType::FloatOut => "float *",
            CType::UintIn => "const unsigned int *",
            CType::UintOut => "unsigned int *",
            CType::LongLong => "long long",
            CType::Int => "int",
            CType::Float => "float",
            CType::Double => "double",
        }
    }
}

/// A kernel's name and parameter types, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KernelSignature {
    pub(crate) name: &'static str,
    pub(crate) params: &'static [CType],
}

use CType::{Double, Float, FloatIn, FloatOut, Int, LongLong, UintIn, UintOut};

pub(crate) const RELU: KernelSignature = KernelSignature {
    name: "caf_relu_f32",
    params: &[FloatIn, FloatOut, LongLong],
};

pub(crate) const ADD_RELU: KernelSignature = KernelSignature {
    name: "caf_add_relu_f32",
    params: &[FloatIn, FloatIn, FloatOut, LongLong],
};

pub(crate) const RELU_GRAD: KernelSignature = KernelSignature {
    name: "caf_relu_grad_f32",
    params: &[FloatIn, FloatIn, FloatOut, LongLong],
};

pub(crate) const BIAS_ACT: KernelSignature = KernelSignature {
    name: "caf_bias_act_f32",
    params: &[FloatIn, FloatIn, FloatOut, LongLong, LongLong, Int, Int],
};

pub(crate) const MAX_POOL: KernelSignature = KernelSignature {
    name: "caf_max_pool2d_f32",
    params: &[FloatIn, FloatOut, UintOut, LongLong, Int, Int, Int, Int, Int, Int, Int],
};

pub(crate) const MAX_POOL_GRAD: KernelSignature = KernelSignature {
    name: "caf_max_pool2d_grad_f32",
    params: &[FloatIn, UintIn, FloatOut, LongLong, Int, Int, Int, Int, Int, Int, Int],
};

pub(crate) const ADAM: KernelSignature = KernelSignature {
    name: "caf_adam_f32",
    params: &[
        FloatOut, FloatIn, FloatOut, FloatOut, LongLong, Float, Float, Float, Float, Float, Float, Float, Float, Float,
    ],
};

pub(crate) const BN_STATS: KernelSignature = KernelSignature {
    name: "caf_bn_stats_f32",
    params: &[FloatIn, FloatOut, Int, Int, LongLong],
};

pub(crate) const BN_FORWARD: KernelSignature = KernelSignature {
    name: "caf_bn_forward_f32",
    params: &[
        FloatIn, FloatIn, FloatIn, FloatIn, FloatOut, LongLong, LongLong, Int, Double, Int,
    ],
};

pub(crate) const BN_GRAD_SUMS: KernelSignature = KernelSignature {
    name: "caf_bn_grad_sums_f32",
    params: &[FloatIn, FloatIn, FloatIn, FloatOut, Int, Int, LongLong, Double],
};

pub(crate) const BN_INPUT_GRAD: KernelSignature = KernelSignature {
    name: "caf_bn_input_grad_f32",
    params: &[
        FloatIn, FloatIn, FloatIn, FloatIn, FloatIn, FloatOut, LongLong, LongLong, Int, Double, Double,
    ],
};

/// Every kernel of `kernels.cu`.
#[cfg(test)]
pub(crate) const ALL: [KernelSignature; 11] = [
    RELU,
    ADD_RELU,
    RELU_GRAD,
    BIAS_ACT,
    MAX_POOL,
    MAX_POOL_GRAD,
    ADAM,
    BN_STATS,
    BN_FORWARD,
    BN_GRAD_SUMS,
    BN_INPUT_GRAD,
];

#[cfg(test)]
mod tests {
    use super::*;

    /// `(name, parameter types)` of every `extern "C" __global__` kernel in `source`.
    fn kernels_in(source: &str) -> Vec<(String, Vec<String>)> {
        source
            .split("extern \"C\" __global__ void ")
            .skip(1)
            .map(|rest| {
                let (name, after) = rest.split_once('(').expect("a parameter list");
                let params = after.split_once(')').expect("the list's end").0;
                let types = params
                    .split(',')
                    .map(|param| {
                        // The name is the last identifier; the type is what comes before it.
                        let param = param.trim();
                        let name_start = param
                            .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                            .map_or(0, |at| at + 1);
                        let spaced = param[..name_start].replace('*', " *");
                        spaced.split_whitespace().collect::<Vec<_>>().join(" ")
                    })
                    .collect();
                (name.trim().to_string(), types)
            })
            .collect()
    }

    #[test]
    fn the_signatures_are_the_kernels_in_the_source() {
        let source = include_str!("cuda/kernels.cu");
        let found = kernels_in(source);
        assert_eq!(found.len(), ALL.len(), "kernels in kernels.cu: {found:?}");
        for signature in ALL {
            let (_, types) = found
                .iter()
                .find(|(name, _)| name == signature.name)
                .unwrap_or_else(|| panic!("{} is not in kernels.cu", signature.name));
            let ours: Vec<&str> = signature.params.iter().map(|t| t.spelling()).collect();
            assert_eq!(&ours, types, "{}", signature.name);
        }
    }

    #[test]
    fn parameter_types_are_read_with_their_pointers() {
        let found = kernels_in(
            "extern \"C\" __global__ void k(const float *x, float* y,\n    unsigned int *at, long long n, double e) {}",
        );
        assert_eq!(
            found,
            [(
                "k".to_string(),
                vec!["const float *", "float *", "unsigned int *", "long long", "double"]
                    .into_iter()
                    .map(String::from)
                    .collect()
            )]
        );
    }
}
