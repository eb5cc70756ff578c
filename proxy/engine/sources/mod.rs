pub mod static_file;
