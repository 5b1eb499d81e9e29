// The dashboard's own files: its pages, scripts and style sheet (in
// launcher/web/static, served as they are: no build step) and the pinned
// JavaScript libraries npm installed into launcher/web/node_modules, served
// by mailnet itself so that a page opened offline works.
#pragma once

#include <filesystem>
#include <optional>
#include <string>

#include "launcher/web/web_api.hpp"

namespace mailnet::launcher::web {

// Where the files are: $MAILNET_WEB_DIR when set, else the source tree's
// launcher/web this launcher was built from.
std::filesystem::path asset_folder();

// Whether a request path names one of the dashboard's files ("/", "/mail.html",
// "/app.js", "/vendor/cytoscape.min.js"); anything else is not ours to answer.
bool is_asset_path(const std::string& path);

// The file's answer: 200 with its content type and the pages' Content-Security-Policy,
// or 404 with a reason (a missing library names the command that installs it).
response asset_response(const std::filesystem::path& folder, const std::string& path);

// What every page may do: scripts, styles, images and connections of its own
// origin only; frames only of its own origin (a mail's HTML, sandboxed by its own answer).
inline constexpr const char* page_policy =
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "frame-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

}  // namespace mailnet::launcher::web
