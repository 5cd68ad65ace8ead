/*  quant.c — being written (placeholder so the build holds together). */
typedef int placeholder_quant;
