// Files and folders of a run folder belong to the user who runs mailnet and
// to nobody else: folders 0700, files 0600, set explicitly (never left to the
// umask), and no link is followed that mailnet did not make. Another local
// user must neither read the mail nor make a mailnet process write through a
// symlink planted before it started (into a root-owned file, say).
//
// The trust rule: a folder is ours when it is a real folder (not a link),
// owned by our effective uid, and writable by nobody else. Inside such a
// folder nobody else can add a name, so a tree checked once at start stays
// ours; everything is still opened with O_NOFOLLOW on its last component.
#pragma once

#include <filesystem>
#include <stdexcept>
#include <string>
#include <sys/types.h>

namespace mailnet {

inline constexpr mode_t private_folder_mode = 0700;
inline constexpr mode_t private_file_mode = 0600;

// A refusal to touch a path; what() names the path and the fix.
struct unsafe_path_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Makes dir (and its missing parents) with mode 0700, or checks an existing
// one: a real folder, ours, writable by nobody else (then tightened to 0700).
// Throws unsafe_path_error, or std::system_error for other failures.
void make_private_folder(const std::filesystem::path& dir);

// Every folder on the way from root (already checked) down to root/rel, made
// like make_private_folder or checked like it, never through a link.
void make_private_folders(const std::filesystem::path& root, const std::filesystem::path& rel);

// Refuses, before anything is written, a tree that is not wholly ours: the
// root or any folder in it not a real folder of ours or writable by others,
// any symbolic link, any file owned by another user. Unix sockets are fine.
void check_private_tree(const std::filesystem::path& root);

// Opens file with O_NOFOLLOW and O_CLOEXEC; with O_CREAT in flags the file
// gets mode 0600 (fchmod: the umask cannot loosen or tighten it). An
// existing file must be a regular file of ours with one link (so not a hard
// link to someone else's file); O_TRUNC is applied after that check.
// Returns the descriptor; throws unsafe_path_error or std::system_error.
int open_private_file(const std::filesystem::path& file, int flags);

// The content of file, read through open_private_file (no link followed,
// ours, one link); throws when it cannot be read or passes max bytes.
std::string read_private_file(const std::filesystem::path& file, std::size_t max);

// Writes data to file (created 0600, replaced content), through
// open_private_file.
void write_private_file(const std::filesystem::path& file, const std::string& data);

// Empties dir without following any link in it: a link is removed, never
// what it points to. dir itself must be a real folder (not a link).
void empty_folder(const std::filesystem::path& dir);

}  // namespace mailnet
