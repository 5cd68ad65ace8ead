/*  gguf_writer.c — being written (placeholder so the build holds together). */
typedef int placeholder_gguf_writer;
