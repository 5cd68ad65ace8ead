/*  tool_parser.c — being written (placeholder so the build holds together). */
typedef int placeholder_tool_parser;
