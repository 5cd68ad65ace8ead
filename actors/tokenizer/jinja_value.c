/*  jinja_value.c — being written (placeholder so the build holds together). */
typedef int placeholder_jinja_value;
