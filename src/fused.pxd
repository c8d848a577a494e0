# The one fused floating type shared by every kernel module: float32 and float64.
ctypedef fused floating_t:
    float
    double
